"""LoRA fine-tuning of the rater on audited labels (peft), on transformers' ``Trainer``.

Examples are built exactly as the rating stage builds its prompts: both views' chat messages
from ``prompts/`` (:func:`llmhni_local.judgments.run.view_messages`, same L), rendered by the model's
chat template (:func:`llmhni_local.engine.chat.render_prompt`) and tokenised without added special
tokens. The target is the label's first token at the answer position
(:func:`llmhni_local.engine.labels.label_token_ids`), the very token whose probability the rating
backends read, followed (``answer = "label"``, the default) by the rest of the label and the
end-of-turn token, so that the tuned model's greedy answer is the bare label. The loss is
cross-entropy at those two or three answer positions only, never on the prompt: prompts are
left-padded and the model computes logits for the last few positions alone
(``logits_to_keep``), much cheaper than full-sequence labels (0.67 vs 0.97 s/example
on 2 cores, docs/BENCHMARKS.md). Validation figures are read at the first answer position, as
rating reads them.

Labels are split once into training and validation pairs (``val_share``): by user where there
are enough users (no validation user has a training pair, so the validation kappa says how the
rater does on users it has not seen), else by pair; the card says which. Validation pairs are
never trained on and are only measured (no model selection on them): the adapter is the last
epoch's.

The loop is transformers' ``Trainer`` (``finetune_trainer``) with our loss, data and
callback; it writes a checkpoint (LoRA weights, optimiser, scheduler, RNG states, history)
after every epoch into ``.<out>.work/``, and a killed run started again with the same inputs
and settings resumes from the last one. The finished adapter is assembled in a temporary
folder, checked by :func:`llmhni_local.weights.adapters.adapter_problems`, and renamed into
place; then the work folder is removed.

The parts live beside this module: settings (``finetune_settings``), the split and the
examples (``finetune_examples``), the runner with batching and answer logits
(``finetune_runner``), the Trainer, its loss and checkpoints (``finetune_trainer``) and the
fingerprint and card (``finetune_card``); :func:`finetune` is the ordered list of steps.
"""


from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llmhni_local.audit.records import AuditStore, labels_hash
from llmhni_local.core.errors import UserError
from llmhni_local.core.offline import enforce_offline
from llmhni_local.core.progress import progress_bar
from llmhni_local.engine.api import LABELS
from llmhni_local.engine.chat import load_tokenizer
from llmhni_local.engine.labels import label_token_ids
from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
from llmhni_local.judgments.plan import run_max_liked
from llmhni_local.text.profiles import load_profiles
from llmhni_local.tune.finetune_card import (
    CARD_FORMAT,
    card_fingerprint,
    fingerprint,
    fingerprint_inputs,
    lora_card,
    save_adapter,
)
from llmhni_local.tune.finetune_examples import (
    Examples,
    answer_tokens,
    build_examples,
    split_labels,
)
from llmhni_local.tune.finetune_runner import (
    Runner,
    answer_logits,
    answer_targets,
    class_weights,
    length_batches,
)
from llmhni_local.tune.finetune_settings import (
    FinetuneConfig,
    FinetuneSettings,
    load_finetune_settings,
)
from llmhni_local.tune.finetune_trainer import (
    Meter,
    checkpoint_state,
    epoch_callback,
    epoch_records,
    make_trainer,
    open_work,
)
from llmhni_local.weights.adapters import adapter_problems
from llmhni_local.weights.registry import (
    RATER_NEEDS,
    model_hash,
    model_id,
    resolve_checked,
    resolve_model,
)

__all__ = ["CARD_FORMAT", "Examples", "FinetuneConfig", "FinetuneSettings", "Runner",
           "answer_logits", "answer_targets", "answer_tokens", "build_examples",
           "card_fingerprint", "class_weights", "finetune", "finetune_run",
           "length_batches", "load_finetune_settings", "lora_config", "split_labels"]


# ---------------------------------------------------------------------------- the run
def lora_config(settings: FinetuneSettings, n_layers: int):
    """The peft ``LoraConfig``: a causal-LM adapter vLLM can serve (no bias, nothing saved
    beside the LoRA matrices)."""
    from peft import LoraConfig

    extra: dict[str, Any] = {}
    if settings.last_layers and settings.last_layers < n_layers:
        extra["layers_to_transform"] = list(range(n_layers - settings.last_layers, n_layers))
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), task_type="CAUSAL_LM",
                      bias="none", modules_to_save=None, **extra)



# ---------------------------------------------------------------------------- the steps
@dataclass
class Job:
    """A fine-tune's checked inputs: everything decided before the model loads."""

    settings: FinetuneSettings
    out: Path
    spec: Any
    tokenizer: Any
    templates: dict
    label_ids: dict
    answers: dict
    labels: Any  # the label frame, sorted by pair
    users: np.ndarray
    pairs: list
    lab_list: list
    train_idx: np.ndarray
    val_idx: np.ndarray
    split_how: str
    train_ex: Examples
    val_ex: Examples
    base_sha: str
    labels_sha: str
    profiles_sha: str
    max_liked: int
    fingerprint: str = ""


def checked_labels(labels, empty: str = "no labels to fine-tune on"):
    """The label frame sorted by pair (a fixed order, so the split and a resumed run's
    fingerprint do not depend on how the labels were read); bad labels are errors (``empty``
    is the message when there are none)."""
    if labels is None or len(labels) == 0:
        raise UserError(empty)
    bad = sorted(set(labels["label"]) - set(LABELS))
    if bad:
        raise UserError(f"labels hold {bad[0]!r}, not one of {', '.join(LABELS)}")
    if labels.duplicated(["user", "item"]).any():
        raise UserError("labels hold the same pair twice")
    return labels.sort_values(["user", "item"], kind="stable").reset_index(drop=True)


def prepare(profiles, labels, out: Path, settings: FinetuneSettings, prompts_dir,
            max_liked: int) -> Job:
    """Every input check, the split and the examples, before the model loads."""
    labels = checked_labels(labels)
    spec = resolve_checked(settings.base, RATER_NEEDS)
    templates = load_templates(tuple(VIEW_TEMPLATES.values()), prompts_dir)
    enforce_offline()
    tokenizer = load_tokenizer(spec.path)
    label_ids = label_token_ids(tokenizer)
    users = labels["user"].astype(np.int64).to_numpy()
    items = labels["item"].astype(np.int64).to_numpy()
    if users.max() >= len(profiles.users) or items.max() >= len(profiles.items) \
            or users.min() < 0 or items.min() < 0:
        raise UserError("labels name users or items the run's profiles do not have")
    train_idx, val_idx, split_how = split_labels(users, settings.val_share, by=settings.split,
                                                 min_val_users=settings.min_val_users,
                                                 seed=settings.seed)
    pairs = list(zip(users.tolist(), items.tolist()))
    lab_list = labels["label"].astype(str).tolist()
    max_tokens = int(getattr(tokenizer, "model_max_length", 0) or 0)
    max_tokens = max_tokens if 0 < max_tokens < 1_000_000 else 8192
    answers = answer_tokens(tokenizer, settings.answer)

    def examples(idx):
        return build_examples([pairs[k] for k in idx], [lab_list[k] for k in idx], profiles,
                              templates, tokenizer, settings.views, max_liked, max_tokens,
                              answers)

    job = Job(settings, out, spec, tokenizer, templates, label_ids, answers, labels, users,
              pairs, lab_list, train_idx, val_idx, split_how, examples(train_idx),
              examples(val_idx), model_hash(spec.path), labels_hash(labels), profiles.hash,
              max_liked)
    job.fingerprint = fingerprint(fingerprint_inputs(
        dataclasses.asdict(settings), job.base_sha, job.labels_sha, job.profiles_sha, max_liked,
        {n: t.hash for n, t in templates.items()}, label_ids, answers))
    return job


def reused_card(job: Job, force: bool, log: Callable[[str], None]) -> dict | None:
    """With ``reuse``: the card of the adapter at ``out`` if it records these very inputs;
    a folder holding anything else is replaced only with ``force``."""
    card_file = job.out / "card.json"
    old = json.loads(card_file.read_text()) if card_file.is_file() else {}
    if card_fingerprint(old) == job.fingerprint and not adapter_problems(
            job.out, max_lora_rank=None, require_card=True):
        log(f"finetune: {job.out} was tuned on these labels with these settings; reused")
        return old
    if not force:  # never replace a folder that is not this very adapter without --force
        raise UserError(f"{job.out} is not an adapter tuned on these labels and settings (other "
                        "labels or settings, or no card); choose another --out or pass "
                        "--force to replace it")
    return None


def load_model(job: Job) -> tuple[Any, int]:
    """The base model (float32) with fresh LoRA matrices, and its layer count."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    if job.settings.threads:
        torch.set_num_threads(job.settings.threads)
    torch.manual_seed(job.settings.seed)
    base = AutoModelForCausalLM.from_pretrained(str(job.spec.path), dtype=torch.float32,
                                                local_files_only=True)
    n_layers = int(getattr(base.config, "num_hidden_layers", 0) or 0)
    return get_peft_model(base, lora_config(job.settings, n_layers)), n_layers


def make_runner(job: Job, model: Any, n_layers: int, prefix_memo: dict | None,
                log: Callable[[str], None]) -> tuple[Runner, int]:
    """The runner, with the frozen-prefix cache where it gives the full pass's logits;
    returns it and how many prefix states came from ``prefix_memo``."""
    s = job.settings
    pad_id = job.tokenizer.pad_token_id if job.tokenizer.pad_token_id is not None else 0
    memo = (prefix_memo.setdefault((job.base_sha, s.dtype), {})
            if prefix_memo is not None else None)
    cut = n_layers - s.last_layers if s.cache_frozen and 0 < s.last_layers < n_layers else 0
    runner = Runner(model, pad_id, s.dtype, cut=cut, memo=memo)
    if not runner.cut:
        return runner, 0
    diff = runner.check(job.train_ex, list(range(min(4, len(job.train_ex.ids)))))
    if diff > 1e-3:
        log(f"finetune: cached frozen layers give logits {diff:.2g} away from the full "
            "pass on this model; running the full pass every step")
        return Runner(model, pad_id, s.dtype, cut=0), 0
    model.eval()  # no dropout can act below the tuned layers, but be sure
    reused = (runner.build_cache("train", job.train_ex, s.batch_size * 2)
              + runner.build_cache("val", job.val_ex, s.batch_size * 2))
    model.train()
    return runner, reused


# ---------------------------------------------------------------------------- the run
def finetune(profiles, labels, out: str | Path, settings: FinetuneSettings | None = None, *,
             prompts_dir: str | Path | None = None, max_liked: int = 10,
             label_sources: Sequence[dict] = (), run_dir: str | Path | None = None,
             progress: bool = True, force: bool = False,
             on_epoch: Callable[[int], None] | None = None,
             prefix_memo: dict | None = None, reuse: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Tune a LoRA adapter on ``labels`` and write it with its card to ``out``.

    Args:
        profiles: the run's :class:`~llmhni_local.text.profiles.Profiles`.
        labels: DataFrame with ``user``, ``item``, ``label`` (and optionally ``simulated``).
        out: the adapter folder to write (``adapters/NAME``).
        settings: fine-tuning settings.
        prompts_dir: templates folder (default ``prompts/``), as the rating stage uses.
        max_liked: L of the item-centric prompt (as the rating stage uses).
        label_sources: where the labels came from (files and their sha256), for the card.
        run_dir: the run folder the labels belong to (for the card).
        progress: progress bars.
        force: replace an existing adapter folder at ``out``.
        on_epoch: called with the epoch number after its checkpoint is written (tests).
        prefix_memo: a dict kept by the caller across several ``finetune`` calls (one process
            tuning on nested label sets, as ``bench/rater_quality.py`` does): frozen-prefix
            states of prompts seen before are taken from it, not computed again. Keyed by base
            model hash, dtype, cut and prompt ids, so it is never wrong, only large (about
            0.5 MB per prompt for SmolLM2). The card counts the states reused; the wall time
            is then lower than a run on its own.
        reuse: if ``out`` already holds a valid adapter whose card records these very inputs
            (settings, base model, labels, profiles, prompts: :func:`card_fingerprint`),
            return its card instead of tuning again; an adapter from other inputs is replaced
            only with ``force``.
        log: where one-line messages go.

    Returns the card (also written to ``out/card.json``).
    """
    import torch

    settings = settings or FinetuneSettings()
    out = Path(out)
    if out.exists() and not (force or reuse):
        raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
    job = prepare(profiles, labels, out, settings, prompts_dir, max_liked)
    if reuse and out.exists():
        card = reused_card(job, force, log)
        if card is not None:
            return card
    work, resume = open_work(job.out, job.fingerprint, log)
    model, n_layers = load_model(job)
    weights = torch.as_tensor(class_weights(job.train_ex.target, settings.class_weights),
                              dtype=torch.float32)
    tid = torch.tensor(list(job.label_ids.values()))
    t_setup = time.perf_counter()
    runner, reused = make_runner(job, model, n_layers, prefix_memo, log)
    setup = time.perf_counter() - t_setup
    steps = math.ceil(len(job.train_ex.ids) / settings.batch_size)
    done, resumed_from = 0, 0
    if resume is not None:
        state = checkpoint_state(resume)
        done, resumed_from = int(state["global_step"]), round(state["epoch"])
        log(f"finetune: resuming after epoch {resumed_from} of {settings.epochs} ({work})")
    meter = Meter()
    with progress_bar("fine-tuning", steps * settings.epochs, enabled=progress,
                      fields=("epoch", "loss"), done=done) as bar:
        callback = epoch_callback(job, runner, tid, meter, bar, log, on_epoch)
        trainer = make_trainer(job, work, model, runner, (weights, tid), callback, meter)
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    history = epoch_records(trainer.state.log_history)
    seconds = setup + sum(float(h.get("seconds", 0.0)) for h in history)
    card = lora_card(job, history, seconds, resumed_from, runner, reused, n_layers,
                     label_sources, run_dir)
    card = save_adapter(model, out, card, job.pairs, job.train_idx, job.val_idx, job.split_how)
    shutil.rmtree(work, ignore_errors=True)
    return card


def finetune_run(run_dir: str | Path, out: str | Path, settings: FinetuneSettings | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """:func:`finetune` on every audited label of ``RUN`` (``RUN/audit/audit.sqlite``); the
    training pairs are recorded there, so ``audit report`` leaves them out."""
    settings = settings or FinetuneSettings()
    run_dir = Path(run_dir)
    profiles = load_profiles(run_dir)
    with AuditStore(run_dir, create=False) as store:
        labels = store.labels()
        sources = [{"file": r["file"], "sha256": r["sha256"], "rows": r["rows"]}
                   for r in store.imports()]
    if labels.empty:
        raise UserError(f"{run_dir}: no audited labels to fine-tune on; run `audit import` first")
    max_liked = run_max_liked(run_dir, settings.max_liked)
    card = finetune(profiles, labels, out, settings, max_liked=max_liked, label_sources=sources,
                    run_dir=run_dir, **kwargs)
    adapter_id = model_id(resolve_model(settings.base), out)
    pairs = json.loads((Path(out) / "pairs.json").read_text())
    with AuditStore(run_dir) as store:
        store.mark_finetune([tuple(p) for p in pairs["train"]], adapter_id, "train")
        store.mark_finetune([tuple(p) for p in pairs["validation"]], adapter_id, "validation")
    card["adapter_id"] = adapter_id
    return card
