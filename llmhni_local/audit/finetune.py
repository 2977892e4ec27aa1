"""LoRA fine-tuning of the rater on audited labels (peft), resumable per epoch.

Examples are built exactly as the rating stage builds its prompts: both views' chat messages
from ``prompts/`` (:func:`llmhni_local.llm.rate.view_messages`, same L), rendered by the model's
chat template (:func:`llmhni_local.llm.chat.render_prompt`) and tokenised without added special
tokens. The target is the label's first token at the answer position
(:func:`llmhni_local.llm.labels.label_token_ids`), the very token whose probability the rating
backends read, followed (``answer = "label"``, the default) by the rest of the label and the
end-of-turn token, so that the tuned model's greedy answer is the bare label. The loss is
cross-entropy at those two or three answer positions only, never on the prompt: prompts are
left-padded and the model computes logits for the last few positions alone
(``logits_to_keep``), much cheaper than full-sequence labels (ENV.md: 0.67 vs 0.97 s/example
on 2 cores). Validation figures are read at the first answer position, as rating reads them.

Labels are split once into training and validation pairs (``val_share``): by user where there
are enough users (no validation user has a training pair, so the validation kappa says how the
rater does on users it has not seen), else by pair; the card says which. Validation pairs are
never trained on and are only measured (no model selection on them): the adapter is the last
epoch's.

A checkpoint (LoRA weights, optimiser, scheduler, RNG state, history) is written atomically
after every epoch into ``<out>.work/``; a killed run started again with the same inputs and
settings resumes after the last finished epoch. The finished adapter is assembled in a
temporary folder, checked by :func:`llmhni_local.audit.adapters.adapter_problems`, and renamed
into place; then the work folder is removed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from llmhni_local.errors import ConfigError, UserError
from llmhni_local.progress import progress_bar
from llmhni_local.llm.base import LABELS

CARD_FORMAT = "llmhni-adapter-card/1"


@dataclass(frozen=True)
class FinetuneSettings:
    """LoRA fine-tuning of the rater (``configs/finetune.toml``, table ``[finetune]``).

    Args:
        base: the rater to tune: registry name (``smollm2``) or model folder; the same model
            must then rate with the adapter. (default: ``"smollm2"``)
        r: LoRA rank. vLLM serves ranks up to its ``max_lora_rank`` (vLLM's own default 16;
            the in-process backend sets it from the adapter). (default: ``16``)
        alpha: LoRA scaling numerator (the update is scaled by alpha / r). (default: ``32``)
        dropout: dropout on the LoRA input during training. (default: ``0.05``)
        target_modules: projections that get LoRA matrices; the attention projections are
            what vLLM serves on every Llama-like model. (default:
            ``("q_proj", "k_proj", "v_proj", "o_proj")``)
        last_layers: put LoRA only in the last N decoder layers (0: every layer). The layers
            below hold no LoRA and never change, so backpropagation stops at the lowest tuned
            layer and (``cache_frozen``) their output is computed once, not every epoch.
            The main lever on a CPU: on SmolLM2-135M (30 layers, ~240-token prompts, 2 cores)
            a training step cost 0.50 s per example with 8 tuned layers, 0.27 with 4 and
            0.16 with 2, against ~1.4 for all 30; the one pass through the frozen layers
            costs ~0.5 s per prompt whatever N is. (default: ``4``)
        cache_frozen: with ``last_layers``, keep each prompt's hidden states below the tuned
            layers in memory (float32: tokens x hidden size x 4 bytes per prompt, about 0.5 MB
            for a 230-token SmolLM2 prompt) and run only the tuned layers per step. Checked
            against the full forward pass on the first batch; a model where the two differ
            (e.g. one that scales its input embeddings) falls back to the full pass.
            (default: ``True``)
        epochs: passes over the training labels. One epoch on a few hundred labels learns
            only the label prior with SmolLM2-135M (ENV.md); several epochs at a higher
            learning rate than the usual 2e-4 do better (measured by
            ``bench/rater_quality.py``). (default: ``3``)
        lr: peak AdamW learning rate (linear warm-up, then linear decay to 0). (default:
            ``1e-3``)
        batch_size: examples per optimiser step. (default: ``8``)
        weight_decay: AdamW weight decay on the LoRA matrices. (default: ``0.0``)
        warmup_share: share of the steps spent warming up. (default: ``0.06``)
        max_grad_norm: gradient clipping (0: none). (default: ``1.0``)
        class_weights: ``balanced`` weights each label by n / (3 n_label) in the loss, so the
            majority label (High) cannot win by itself; ``none`` uses plain cross-entropy.
            (default: ``"balanced"``)
        val_share: share of the labelled pairs held out for validation. (default: ``0.2``)
        split: ``user`` (held-out users; falls back to pairs with fewer than
            ``min_val_users`` users to hold out) or ``pair``. (default: ``"user"``)
        min_val_users: fewest validation users for a split by user. (default: ``5``)
        views: which views' prompts to train on; each label gives one example per view.
            (default: ``("user", "item")``)
        answer: what the loss covers at the answer. ``label``: the label's tokens and the chat
            template's end-of-turn token (a few positions past the prompt, still no loss on
            the prompt), so the tuned model's greedy answer is exactly the label and parses;
            the first of them is the token the backends score. ``first_token``: that first
            token only; cheapest, but the greedy text may then run on (SmolLM2 tuned this way
            answered "Medium Low Low", which the parser rightly rejects). (default:
            ``"label"``)
        max_liked: L of the item-centric prompt; ``None`` takes the run's rating setting
            (``RUN/rating.json``), else the rating stage's default, so prompts match rating.
            (default: ``None``)
        dtype: compute dtype of the forward pass. ``bfloat16`` autocasts matrix products (the
            LoRA weights and optimiser stay float32); it pays only on a CPU with AVX-512 BF16
            or AMX: on one without (an AVX2-only AMD EPYC, measured) a bf16 matrix product is
            ~300x slower than float32. (default: ``"float32"``)
        validate_before: measure the untuned model on the validation pairs first (the card's
            "before" figures). (default: ``True``)
        seed: seed of the split, LoRA initialisation, order and dropout. (default: ``0``)
        threads: torch CPU threads (0: torch's default). (default: ``0``)
    """

    base: str = "smollm2"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    last_layers: int = 4
    cache_frozen: bool = True
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 8
    weight_decay: float = 0.0
    warmup_share: float = 0.06
    max_grad_norm: float = 1.0
    class_weights: Literal["balanced", "none"] = "balanced"
    val_share: float = 0.2
    split: Literal["user", "pair"] = "user"
    min_val_users: int = 5
    views: tuple[str, ...] = ("user", "item")
    answer: Literal["label", "first_token"] = "label"
    max_liked: int | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    validate_before: bool = True
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.r >= 1, f"finetune.r must be >= 1, got {self.r}"),
            (self.alpha > 0, f"finetune.alpha must be > 0, got {self.alpha}"),
            (0.0 <= self.dropout < 1.0, f"finetune.dropout must be in [0, 1), got {self.dropout}"),
            (bool(self.target_modules), "finetune.target_modules must not be empty"),
            (self.last_layers >= 0, f"finetune.last_layers must be >= 0, got {self.last_layers}"),
            (self.epochs >= 1, f"finetune.epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"finetune.lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"finetune.batch_size must be >= 1, got {self.batch_size}"),
            (0.0 <= self.warmup_share < 1.0, "finetune.warmup_share must be in [0, 1)"),
            (self.max_grad_norm >= 0, "finetune.max_grad_norm must be >= 0"),
            (0.0 <= self.val_share < 1.0, f"finetune.val_share must be in [0, 1), got "
                                          f"{self.val_share}"),
            (self.min_val_users >= 1, "finetune.min_val_users must be >= 1"),
            (bool(self.views) and set(self.views) <= {"user", "item"},
             f"finetune.views must be a non-empty subset of user, item; got {list(self.views)}"),
            (self.max_liked is None or self.max_liked >= 0, "finetune.max_liked must be >= 0"),
            (self.answer in ("label", "first_token"),
             f"finetune.answer must be label or first_token, got {self.answer!r}"),
            (self.threads >= 0, "finetune.threads must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class FinetuneConfig:
    """A settings file for ``finetune-rater``: the table ``[finetune]``."""

    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)


def load_finetune_settings(path: str | Path | None,
                           overrides: dict[str, Any] | None = None) -> FinetuneSettings:
    """Defaults < TOML file (``[finetune]``) < flags (``{"finetune.epochs": 2}``)."""
    from llmhni_local.config import load_config

    return load_config(FinetuneConfig, path, overrides).finetune


# ---------------------------------------------------------------------------- split
def split_labels(users: Sequence[int], val_share: float, *, by: str = "user",
                 min_val_users: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``(train_idx, val_idx, how)``: row indices of the training and validation labels.

    By user: users in a seeded random order are moved to validation until their labels reach
    ``val_share`` of all; no user is on both sides. When that would hold out fewer than
    ``min_val_users`` users (or leave no training user), the split is by pair instead (a
    seeded random ``val_share`` of the rows); ``how`` says which was done.

    >>> tr, va, how = split_labels([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], 0.34, min_val_users=2)
    >>> how, len(va), sorted(set([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5][k] for k in va)) != []
    ('user', 4, True)
    """
    users = np.asarray(users, dtype=np.int64)
    n = len(users)
    rng = np.random.default_rng(seed)
    if val_share <= 0 or n < 2:
        return np.arange(n), np.zeros(0, dtype=np.int64), "none"
    target = int(round(val_share * n))
    if by == "user":
        uniq = np.unique(users)
        order = rng.permutation(uniq)
        counts = {int(u): int(c) for u, c in zip(*np.unique(users, return_counts=True))}
        chosen, total = [], 0
        for u in order:
            if total >= target:
                break
            chosen.append(int(u))
            total += counts[int(u)]
        if len(chosen) >= min_val_users and len(chosen) < len(uniq):
            mask = np.isin(users, chosen)
            return np.flatnonzero(~mask), np.flatnonzero(mask), "user"
    elif by != "pair":
        raise ConfigError(f"finetune.split must be 'user' or 'pair', got {by!r}")
    perm = rng.permutation(n)
    target = min(max(target, 1), n - 1)
    return np.sort(perm[target:]), np.sort(perm[:target]), "pair"


# ---------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Examples:
    """Tokenised prompts and their label targets.

    ``ids`` is the prompt followed by all but the last answer token, so the model's outputs at
    the last ``len(answer[k])`` positions predict ``answer[k]``; ``answer[k][0]`` is the
    label's first token (the one the backends score)."""

    ids: list[list[int]]
    answer: list[list[int]]
    target: np.ndarray  # label index into LABELS
    view: np.ndarray  # "user" / "item"
    pair: np.ndarray  # (n, 2) user, item


def answer_tokens(tokenizer, how: str = "label") -> dict[str, list[int]]:
    """Per label, the tokens the model should write after a rating prompt.

    ``first_token``: the label's first token (:func:`~llmhni_local.llm.labels.label_token_ids`).
    ``label``: the label's tokens and the end-of-turn token, as the chat template writes an
    assistant turn holding just the label (cut after the first special token).
    """
    from llmhni_local.llm.labels import label_token_ids

    first = label_token_ids(tokenizer)
    if how == "first_token":
        return {lab: [tid] for lab, tid in first.items()}
    user = [{"role": "user", "content": "Rate."}]
    prefix = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    base = enc(prefix)
    special = set(tokenizer.all_special_ids)
    out = {}
    for lab in LABELS:
        turn = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": lab}],
                                             tokenize=False)
        full = enc(turn)
        rest = full[len(base):] if full[:len(base)] == base else []
        stop = next((k for k, t in enumerate(rest) if t in special), None)
        if stop is not None:
            rest = rest[:stop + 1]
        elif tokenizer.eos_token_id is not None:
            rest = enc(lab) if not rest else rest
            rest = rest + [tokenizer.eos_token_id]
        if not rest or rest[0] != first[lab]:
            raise UserError(f"the chat template writes the answer {lab!r} as tokens {rest[:4]} "
                            f"that do not start with its scored token {first[lab]}; use "
                            "finetune.answer = \"first_token\"")
        out[lab] = rest
    return out


def build_examples(pairs: Sequence[tuple[int, int]], labels: Sequence[str], profiles, templates,
                   tokenizer, views: Sequence[str], max_liked: int, max_tokens: int,
                   answers: dict[str, list[int]] | None = None) -> Examples:
    """One example per (pair, view): the rating prompt's token ids (then all but the last of
    the answer's tokens) and the answer to learn (default: the label's first token only)."""
    from llmhni_local.llm.chat import encode_prompts, render_prompt
    from llmhni_local.llm.prompts import VIEW_TEMPLATES
    from llmhni_local.llm.rate import view_messages

    texts, target, view_of, pair_of = [], [], [], []
    for (u, i), lab in zip(pairs, labels):
        for view in views:
            msgs = view_messages(view, int(u), int(i), profiles, templates[VIEW_TEMPLATES[view]],
                                 max_liked)
            texts.append(render_prompt(tokenizer, msgs))
            target.append(LABELS.index(lab))
            view_of.append(view)
            pair_of.append((int(u), int(i)))
    ids = encode_prompts(tokenizer, texts)
    if answers is None:
        answers = answer_tokens(tokenizer, "first_token")
    answer = [list(answers[LABELS[t]]) for t in target]
    ids = [row + a[:-1] for row, a in zip(ids, answer)]
    long = [k for k, row in enumerate(ids) if len(row) > max_tokens]
    if long:
        k = long[0]
        raise UserError(f"{len(long)} prompts are longer than {max_tokens} tokens (first: user "
                        f"{pair_of[k][0]}, item {pair_of[k][1]}, {view_of[k]} view, "
                        f"{len(ids[k])} tokens); shorten the profiles")
    return Examples(ids=ids, answer=answer, target=np.asarray(target, dtype=np.int64),
                    view=np.asarray(view_of),
                    pair=np.asarray(pair_of, dtype=np.int64).reshape(-1, 2))


def _batch_tensors(rows: Sequence[Sequence[int]], pad_id: int):
    """Left-padded ``input_ids``, ``attention_mask`` and ``position_ids`` (positions count
    from each prompt's first real token, as in generation, so padding changes nothing)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[k, width - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def answer_logits(model, rows: Sequence[Sequence[int]], pad_id: int, dtype: str, keep: int = 1):
    """``(batch, keep, vocab)`` float32 logits at the last ``keep`` positions (full pass)."""
    import torch

    ids, mask, pos = _batch_tensors(rows, pad_id)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep,
                    use_cache=False)
    return out.logits[:, -keep:, :].float()


def answer_targets(answers: Sequence[Sequence[int]]):
    """For a batch whose last ``K = max len`` positions' logits were kept: ``(rows, cols,
    tokens, first)``: the flat (row, window column) of every answer token with its target
    token, and the window column of each example's first answer token."""
    import torch

    k = max(len(a) for a in answers)
    rows, cols, toks, first = [], [], [], []
    for r, a in enumerate(answers):
        first.append(k - len(a))
        for j, t in enumerate(a):
            rows.append(r)
            cols.append(k - len(a) + j)
            toks.append(t)
    return (torch.tensor(rows), torch.tensor(cols), torch.tensor(toks), torch.tensor(first), k)


def length_batches(lengths: Sequence[int], batch_size: int,
                   rng: np.random.Generator | None = None, jitter: int = 8) -> list[np.ndarray]:
    """Batches of example indices that hold prompts of similar length, so left padding wastes
    little (on SmolLM2 prompts of ~200 and ~280 tokens, a step on length-sorted batches took
    0.50 s per example against 0.65 s on random ones). With ``rng`` (training): lengths get a
    random jitter of up to ``jitter`` tokens before sorting, so batches differ between epochs,
    and the batches come in a random order. Without: sorted, in order (caching, validation).

    >>> [b.tolist() for b in length_batches([5, 1, 4, 2], 2)]
    [[1, 3], [2, 0]]
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    key = lengths + (rng.uniform(0, jitter, len(lengths)) if rng is not None else 0.0)
    order = np.argsort(key, kind="stable")
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


class _Stop(Exception):
    """Raised by a forward hook to stop a pass once the frozen layers are done."""


class Runner:
    """Answer-position logits of examples, through the whole model or, with a frozen-prefix
    cache, through the tuned top layers only (the layers below are run once per prompt)."""

    def __init__(self, model, pad_id: int, dtype: str, cut: int = 0,
                 memo: dict | None = None) -> None:
        self.model, self.pad_id, self.dtype = model, pad_id, dtype
        self.memo = memo  # prompt ids -> frozen-prefix states, shared between runs (see finetune)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner = getattr(base, "model", None)
        ok = cut > 0 and inner is not None and hasattr(inner, "layers") and cut < len(inner.layers)
        self.inner, self.cut = (inner, cut) if ok else (None, 0)
        self.cache: dict[str, list] = {}

    def prefix(self, rows: Sequence[Sequence[int]]) -> list:
        """Hidden states after the frozen layers, one ``(tokens, hidden)`` tensor per prompt."""
        import torch

        ids, mask, pos = _batch_tensors(rows, self.pad_id)
        got: dict[str, Any] = {}

        def hook(module, args, output):
            got["h"] = output[0] if isinstance(output, tuple) else output
            raise _Stop

        handle = self.inner.layers[self.cut - 1].register_forward_hook(hook)
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                 enabled=self.dtype == "bfloat16"):
                self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        h = got["h"].float()
        width = h.shape[1]
        return [h[k, width - len(r):].clone() for k, r in enumerate(rows)]

    def build_cache(self, name: str, ex: "Examples", batch_size: int) -> int:
        """Frozen-prefix states of every example (length-sorted batches); returns how many
        came from the memo instead of a forward pass."""
        out: list = [None] * len(ex.ids)
        memo = self.memo if self.memo is not None else {}  # a throwaway one: same code path
        todo = []
        for k, row in enumerate(ex.ids):
            hit = memo.get((self.cut, tuple(row)))
            if hit is None:
                todo.append(k)
            else:
                out[k] = hit
        for sel in length_batches([len(ex.ids[k]) for k in todo], batch_size):
            picked = [todo[j] for j in sel]
            for k, h in zip(picked, self.prefix([ex.ids[k] for k in picked])):
                out[k] = memo[(self.cut, tuple(ex.ids[k]))] = h
        self.cache[name] = out
        return len(ex.ids) - len(todo)

    def _top(self, hidden: list, keep: int = 1):
        import contextlib

        import torch

        lengths = [h.shape[0] for h in hidden]
        width, size = max(lengths), hidden[0].shape[-1]
        x = torch.zeros((len(hidden), width, size), dtype=hidden[0].dtype)
        mask = torch.zeros((len(hidden), width), dtype=torch.long)
        for k, h in enumerate(hidden):
            x[k, width - lengths[k]:] = h
            mask[k, width - lengths[k]:] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)

        @contextlib.contextmanager
        def top_layers_only():
            # The model runs its decoder layers as `self.layers[:n]`: hand it the tuned ones
            # for this one call (the module names, and so the saved weights, are restored).
            full = self.inner.layers
            self.inner.layers = torch.nn.ModuleList(list(full)[self.cut:])
            try:
                yield
            finally:
                self.inner.layers = full

        with top_layers_only(), torch.autocast("cpu", dtype=torch.bfloat16,
                                               enabled=self.dtype == "bfloat16"):
            out = self.model(inputs_embeds=x, attention_mask=mask, position_ids=pos,
                             logits_to_keep=keep, use_cache=False)
        return out.logits[:, -keep:, :].float()

    def logits(self, name: str, ex: "Examples", sel: Sequence[int], keep: int = 1):
        """``(batch, keep, vocab)`` logits of the last ``keep`` positions of ``sel``."""
        if name in self.cache:
            return self._top([self.cache[name][k] for k in sel], keep)
        return answer_logits(self.model, [ex.ids[k] for k in sel], self.pad_id, self.dtype, keep)

    def check(self, ex: "Examples", sel: Sequence[int], atol: float = 1e-3) -> float:
        """Largest difference between cached and full-pass logits on ``sel`` (eval mode)."""
        import torch

        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            full = answer_logits(self.model, [ex.ids[k] for k in sel], self.pad_id, self.dtype, 3)
            split = self._top(self.prefix([ex.ids[k] for k in sel]), 3)
        if was:
            self.model.train()
        return float((full - split).abs().max())


def class_weights(targets: np.ndarray, how: str) -> np.ndarray:
    """Per-label loss weights: ``n / (K n_label)`` (``balanced``; 0 for an absent label) or 1.

    >>> class_weights(np.array([0, 0, 0, 1]), "balanced").round(3).tolist()
    [0.444, 1.333, 0.0]
    """
    k = len(LABELS)
    if how == "none":
        return np.ones(k)
    counts = np.bincount(targets, minlength=k).astype(float)
    return np.where(counts > 0, len(targets) / (k * np.maximum(counts, 1)), 0.0)


def evaluate_examples(runner: Runner, name: str, ex: Examples, label_ids: Sequence[int],
                      batch_size: int) -> dict[str, Any]:
    """Label probabilities of every example and agreement with the targets, per view and
    pooled (the predicted label is the most probable of the three label tokens)."""
    import torch
    import torch.nn.functional as F

    from llmhni_local.audit.agreement import agreement

    if not len(ex.ids):
        return {}
    model = runner.model
    was_training = model.training
    model.eval()
    n = len(ex.ids)
    p, losses, masses = np.zeros((n, len(LABELS))), np.zeros(n), np.zeros(n)
    tid = torch.tensor(list(label_ids))
    with torch.no_grad():
        for sel in length_batches([len(r) for r in ex.ids], batch_size):
            _, _, _, first, k = answer_targets([ex.answer[j] for j in sel])
            window = runner.logits(name, ex, sel, k)
            logits = window[torch.arange(len(sel)), first]  # where the label is scored
            target = torch.as_tensor(ex.target[sel])
            losses[sel] = F.cross_entropy(logits, tid[target], reduction="none").numpy()
            logp = torch.log_softmax(logits, dim=-1)[:, tid]
            masses[sel] = logp.exp().sum(-1).numpy()
            p[sel] = torch.softmax(logp, dim=-1).numpy()
    if was_training:
        model.train()
    pred = [LABELS[k] for k in p.argmax(1)]
    truth = [LABELS[k] for k in ex.target]
    views = ex.view
    out: dict[str, Any] = {"loss": float(np.mean(losses)), "label_mass": float(np.mean(masses))}
    pooled = agreement(truth, pred)
    out.update(kappa=pooled["kappa"], weighted_kappa=pooled["weighted_kappa"],
               accuracy=pooled["accuracy"], n=pooled["n"], confusion=pooled["confusion"],
               pred_counts={lab: pred.count(lab) for lab in LABELS})
    out["per_view"] = {}
    for view in sorted(set(views.tolist())):
        m = views == view
        a = agreement([t for t, k in zip(truth, m) if k], [q for q, k in zip(pred, m) if k])
        out["per_view"][view] = {"kappa": a["kappa"], "weighted_kappa": a["weighted_kappa"],
                                 "accuracy": a["accuracy"], "n": a["n"]}
    return out


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


def _fingerprint(parts: dict[str, Any]) -> str:
    from llmhni_local.io import sha256_text

    return sha256_text(json.dumps(parts, sort_keys=True, default=str))


def _inputs(settings: dict, base_sha: str, labels_sha: str, profiles_sha: str, max_liked: int,
            templates: dict, label_ids: dict, answers: dict) -> dict[str, Any]:
    """Everything that decides what a fine-tune produces (its fingerprint's parts)."""
    return {"settings": settings, "base": base_sha, "labels": labels_sha,
            "profiles": profiles_sha, "max_liked": max_liked, "templates": templates,
            "label_ids": label_ids, "answers": answers}


def card_fingerprint(card: dict[str, Any]) -> str | None:
    """The fingerprint of the inputs an adapter card records (``None`` if it lacks any)."""
    try:
        pr = card["prompts"]
        parts = _inputs(card["settings"], card["base_model"]["sha256"], card["labels"]["sha256"],
                        pr["profiles_sha256"], pr["max_liked"], pr["templates"],
                        pr["label_tokens"], pr["answer_tokens"])
    except (KeyError, TypeError):
        return None
    return _fingerprint(parts)  # lists where the settings had tuples: the same JSON text


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    from llmhni_local.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _latest_checkpoint(work: Path, fingerprint: str, epochs: int):
    """The last finished epoch's checkpoint of a run with this fingerprint (or ``None``)."""
    import torch

    meta = work / "fingerprint.txt"
    if not meta.is_file() or meta.read_text().strip() != fingerprint:
        return None
    found = sorted(work.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    for path in reversed(found):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is skipped, an older one used
            continue
        if state.get("fingerprint") == fingerprint and state.get("epoch", 0) <= epochs:
            return state
    return None


def finetune(profiles, labels, out: str | Path, settings: FinetuneSettings | None = None, *,
             prompts_dir: str | Path | None = None, max_liked: int = 10,
             label_sources: Sequence[dict] = (), run_dir: str | Path | None = None,
             progress: bool = True, force: bool = False,
             on_epoch: Callable[[int], None] | None = None,
             prefix_memo: dict | None = None, reuse: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Tune a LoRA adapter on ``labels`` and write it with its card to ``out``.

    Args:
        profiles: the run's :class:`~llmhni_local.llm.profiles.Profiles`.
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
    from llmhni_local.audit.adapters import adapter_problems, write_card
    from llmhni_local.audit.records import labels_hash
    from llmhni_local.llm.chat import load_tokenizer
    from llmhni_local.llm.labels import label_token_ids
    from llmhni_local.llm.offline import enforce_offline
    from llmhni_local.llm.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.llm.registry import RATER_NEEDS, model_hash, resolve_checked

    settings = settings or FinetuneSettings()
    out = Path(out)
    if out.exists() and not (force or reuse):
        raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
    if labels is None or len(labels) == 0:
        raise UserError("no labels to fine-tune on")
    bad = sorted(set(labels["label"]) - set(LABELS))
    if bad:
        raise UserError(f"labels hold {bad[0]!r}, not one of {', '.join(LABELS)}")
    if labels.duplicated(["user", "item"]).any():
        raise UserError("labels hold the same pair twice")
    # A fixed order, so the split (and a resumed run's fingerprint) does not depend on how the
    # labels were read.
    labels = labels.sort_values(["user", "item"], kind="stable").reset_index(drop=True)
    # Every input check before the model loads.
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
    train_ex = build_examples([pairs[k] for k in train_idx], [lab_list[k] for k in train_idx],
                              profiles, templates, tokenizer, settings.views, max_liked, max_tokens,
                              answers)
    val_ex = build_examples([pairs[k] for k in val_idx], [lab_list[k] for k in val_idx],
                            profiles, templates, tokenizer, settings.views, max_liked, max_tokens,
                            answers)
    base_sha = model_hash(spec.path)
    l_hash = labels_hash(labels)
    fingerprint = _fingerprint(_inputs(
        dataclasses.asdict(settings), base_sha, l_hash, profiles.hash, max_liked,
        {n: t.hash for n, t in templates.items()}, label_ids, answers))
    if reuse and out.exists():
        card_file = out / "card.json"
        old = json.loads(card_file.read_text()) if card_file.is_file() else {}
        if card_fingerprint(old) == fingerprint and not adapter_problems(
                out, max_lora_rank=None, require_card=True):
            log(f"finetune: {out} was tuned on these labels with these settings; reused")
            return old
        if not force:  # never replace a folder that is not this very adapter without --force
            raise UserError(f"{out} is not an adapter tuned on these labels and settings (other "
                            "labels or settings, or no card); choose another --out or pass "
                            "--force to replace it")
    work = out.parent / f".{out.name}.work"
    work.mkdir(parents=True, exist_ok=True)

    import torch
    import torch.nn.functional as F

    if settings.threads:
        torch.set_num_threads(settings.threads)
    state = _latest_checkpoint(work, fingerprint, settings.epochs)
    if state is None and any(work.glob("epoch-*.pt")):
        log(f"finetune: checkpoints in {work} are from other inputs or settings; starting over")
        for p in work.glob("epoch-*.pt"):
            p.unlink()
    (work / "fingerprint.txt").write_text(fingerprint + "\n")

    from peft import get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(settings.seed)
    base = AutoModelForCausalLM.from_pretrained(str(spec.path), dtype=torch.float32,
                                                local_files_only=True)
    n_layers = int(getattr(base.config, "num_hidden_layers", 0) or 0)
    model = get_peft_model(base, lora_config(settings, n_layers))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_ex.ids) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    warmup = int(settings.warmup_share * total_steps)

    def schedule(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    weights = torch.as_tensor(class_weights(train_ex.target, settings.class_weights),
                              dtype=torch.float32)
    tid = torch.tensor(list(label_ids.values()))
    history: list[dict[str, Any]] = []
    start_epoch, seconds, resumed_from = 0, 0.0, 0
    t_setup = time.perf_counter()
    memo = (prefix_memo.setdefault((base_sha, settings.dtype), {})
            if prefix_memo is not None else None)
    runner = Runner(model, pad_id, settings.dtype,
                    cut=n_layers - settings.last_layers
                    if settings.cache_frozen and 0 < settings.last_layers < n_layers else 0,
                    memo=memo)
    reused = 0
    if runner.cut:
        sel = list(range(min(4, len(train_ex.ids))))
        diff = runner.check(train_ex, sel)
        if diff > 1e-3:
            log(f"finetune: cached frozen layers give logits {diff:.2g} away from the full "
                "pass on this model; running the full pass every step")
            runner = Runner(model, pad_id, settings.dtype, cut=0)
        else:
            model.eval()  # no dropout can act below the tuned layers, but be sure
            reused = (runner.build_cache("train", train_ex, settings.batch_size * 2)
                      + runner.build_cache("val", val_ex, settings.batch_size * 2))
            model.train()
    seconds += time.perf_counter() - t_setup
    if state is not None:
        set_peft_model_state_dict(model, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        history, start_epoch, seconds = state["history"], state["epoch"], state["seconds"]
        resumed_from = start_epoch
        log(f"finetune: resuming after epoch {start_epoch} of {settings.epochs} ({work})")
    elif settings.validate_before and len(val_idx):
        t0 = time.perf_counter()
        history.append({"epoch": 0, "val": evaluate_examples(
            runner, "val", val_ex, tid.tolist(), settings.batch_size * 2)})
        seconds += time.perf_counter() - t0
    model.train()
    with progress_bar("fine-tuning", total_steps, enabled=progress, fields=("epoch", "loss"),
                      done=start_epoch * steps_per_epoch) as bar:
        for epoch in range(start_epoch, settings.epochs):
            t0 = time.perf_counter()
            batches = length_batches([len(r) for r in train_ex.ids], settings.batch_size,
                                     np.random.default_rng([settings.seed, epoch]))
            run_loss, n_seen = 0.0, 0
            for sel in batches:
                rows, cols, toks, first, k = answer_targets([train_ex.answer[j] for j in sel])
                window = runner.logits("train", train_ex, sel, k)
                target = torch.as_tensor(train_ex.target[sel])
                # every answer position, each weighted by its example's label weight
                per_pos = F.cross_entropy(window[rows, cols], toks, reduction="none")
                w = weights[target][rows]
                loss = (per_pos * w).sum() / w.sum().clamp(min=1e-8)
                loss.backward()
                # reported: the loss at the scored (first) position, as validation reports it
                per = F.cross_entropy(window[torch.arange(len(sel)), first].detach(), tid[target],
                                      reduction="none")
                if settings.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                run_loss += float(per.sum())
                n_seen += len(sel)
                bar.advance(1, epoch=f"{epoch + 1}/{settings.epochs}", loss=run_loss / n_seen)
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": run_loss / max(1, n_seen),
                                      "lr_end": scheduler.get_last_lr()[0]}
            if len(val_idx):
                record["val"] = evaluate_examples(runner, "val", val_ex, tid.tolist(),
                                                  settings.batch_size * 2)
            seconds += time.perf_counter() - t0
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            val = record.get("val", {})
            log(f"finetune: epoch {epoch + 1}/{settings.epochs} train loss "
                f"{record['train_loss']:.4f}" + (f", validation kappa {val['kappa']:.3f}, "
                                                 f"loss {val['loss']:.4f}" if val else ""))
            from peft import get_peft_model_state_dict

            _save_checkpoint(work / f"epoch-{epoch + 1}.pt", {
                "fingerprint": fingerprint, "epoch": epoch + 1, "history": history,
                "seconds": seconds, "lora": get_peft_model_state_dict(model),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()})
            for old in work.glob("epoch-*.pt"):  # keep only the newest checkpoint
                if old.name != f"epoch-{epoch + 1}.pt":
                    old.unlink()
            if on_epoch is not None:
                on_epoch(epoch + 1)

    # ------------------------------------------------------------------ the adapter
    import peft
    import transformers

    final = history[-1].get("val", {}) if history else {}
    before = history[0]["val"] if history and history[0]["epoch"] == 0 else None
    n_examples = len(train_ex.ids) * settings.epochs
    card = {
        "format": CARD_FORMAT,
        "name": out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": {"name": settings.base, "path": str(spec.path), "sha256": base_sha,
                       "kind": spec.kind, "source": str(spec.source) if spec.source else None},
        "labels": {
            "sha256": l_hash, "n": int(len(labels)),
            "counts": {lab: int(lab_list.count(lab)) for lab in LABELS},
            "simulated": bool(labels["simulated"].astype(bool).all())
            if "simulated" in labels else False,
            "sources": list(label_sources), "run": str(run_dir) if run_dir else None},
        "split": {"by": split_how, "val_share": settings.val_share,
                  "train_pairs": int(len(train_idx)), "val_pairs": int(len(val_idx)),
                  "train_users": int(len(np.unique(users[train_idx]))),
                  "val_users": int(len(np.unique(users[val_idx]))) if len(val_idx) else 0},
        "settings": dataclasses.asdict(settings),
        "prompts": {"templates": {n: t.hash for n, t in templates.items()},
                    "max_liked": max_liked, "profiles_sha256": profiles.hash,
                    "label_tokens": label_ids, "views": list(settings.views),
                    "answer_tokens": answers,
                    "target": ("the label's tokens and the end-of-turn token after the prompt"
                               if settings.answer == "label" else
                               "the label's first token at the answer position")},
        "validation": {
            "kappa": final.get("kappa"), "weighted_kappa": final.get("weighted_kappa"),
            "accuracy": final.get("accuracy"), "n": final.get("n"),
            "per_view": final.get("per_view"), "confusion": final.get("confusion"),
            "before_tuning": None if before is None else {
                k: before.get(k) for k in ("kappa", "weighted_kappa", "accuracy", "per_view")},
            "note": "last epoch's adapter; validation pairs were never trained on nor used to "
                    "choose anything"},
        "history": history,
        "training": {"wall_seconds": seconds, "examples_per_epoch": len(train_ex.ids),
                     "frozen_prefix_cache": bool(runner.cut),
                     "prefix_states_reused": int(reused), "tuned_layers":
                     settings.last_layers if 0 < settings.last_layers < n_layers else n_layers,
                     "seconds_per_example": seconds / max(1, n_examples),
                     "epochs": settings.epochs, "resumed_after_epoch": resumed_from},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        pair_list = {"train": [list(map(int, pairs[k])) for k in train_idx],
                     "validation": [list(map(int, pairs[k])) for k in val_idx],
                     "split": split_how}
        (tmp / "pairs.json").write_text(json.dumps(pair_list) + "\n")
        write_card(tmp, card)
        problems = adapter_problems(tmp, max_lora_rank=None, require_card=True)
        if problems:
            raise UserError(f"the tuned adapter would not be servable: {problems[0]}")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an adapter folder is plain data
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return json.loads((out / "card.json").read_text())  # as stored, as a reused card comes back


def finetune_run(run_dir: str | Path, out: str | Path, settings: FinetuneSettings | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """:func:`finetune` on every audited label of ``RUN`` (``RUN/audit/audit.sqlite``); the
    training pairs are recorded there, so ``audit report`` leaves them out."""
    from llmhni_local.audit.records import AuditStore
    from llmhni_local.llm.profiles import load_profiles
    from llmhni_local.llm.rate import RateSettings, read_rating_manifest
    from llmhni_local.llm.registry import model_id, resolve_model

    settings = settings or FinetuneSettings()
    run_dir = Path(run_dir)
    profiles = load_profiles(run_dir)
    with AuditStore(run_dir, create=False) as store:
        labels = store.labels()
        sources = [{"file": r["file"], "sha256": r["sha256"], "rows": r["rows"]}
                   for r in store.imports()]
    if labels.empty:
        raise UserError(f"{run_dir}: no audited labels to fine-tune on; run `audit import` first")
    max_liked = settings.max_liked
    if max_liked is None:
        try:
            max_liked = int(read_rating_manifest(run_dir)["settings"]["max_liked"])
        except (UserError, KeyError):
            max_liked = RateSettings().max_liked
    card = finetune(profiles, labels, out, settings, max_liked=max_liked, label_sources=sources,
                    run_dir=run_dir, **kwargs)
    adapter_id = model_id(resolve_model(settings.base), out)
    pairs = json.loads((Path(out) / "pairs.json").read_text())
    with AuditStore(run_dir) as store:
        store.mark_finetune([tuple(p) for p in pairs["train"]], adapter_id, "train")
        store.mark_finetune([tuple(p) for p in pairs["validation"]], adapter_id, "validation")
    card["adapter_id"] = adapter_id
    return card
