"""Adapter folders: the card, and whether vLLM (and transformers) can serve an adapter.

Two kinds of folder rate through ``rater.adapter``: a LoRA adapter (below) and a probe
(``finetune-rater --kind probe``, :mod:`llmhni_local.tune.probe`), whose own checks
:func:`adapter_problems` runs when the folder is one.

``adapters/NAME/`` holds what peft saves (``adapter_config.json``,
``adapter_model.safetensors``), ``card.json`` (base model and its sha256, the label set's
sha256 and sources, the split, the settings, validation kappa and training history),
``README.md`` (the card for people) and ``pairs.json`` (the labelled pairs that trained and
validated it, so evaluations can leave the training ones out).

:func:`adapter_problems` builds on :func:`lora_folder_problem`
(folder, ``adapter_config.json``, weights file, ``peft_type`` LORA, ``task_type``,
``modules_to_save``) and adds what serving also needs: ``task_type`` present and CAUSAL_LM,
``bias = "none"``, no DoRA, a rank within the engine's ``max_lora_rank``, weights that are
LoRA matrices only, the card (for this toolkit's adapters) and, when asked, the base model the
card names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import write_json, write_text
from llmhni_local.weights.probe import probe_problems
from llmhni_local.weights.registry import is_probe_folder, model_hash, resolve_model

CARD_FILE = "card.json"
#: vLLM's own default ``--max-lora-rank``: what a ``vllm serve --enable-lora`` without that
#: flag accepts. The in-process backend sets the limit from the adapter instead.
VLLM_DEFAULT_MAX_LORA_RANK = 16
VLLM_LARGEST_LORA_RANK = 512  # the largest max_lora_rank vLLM 0.32 accepts


def adapter_problems(path: str | os.PathLike, *,
                     max_lora_rank: int | None = VLLM_DEFAULT_MAX_LORA_RANK,
                     require_card: bool = True, base: str | None = None) -> list[str]:
    """Everything that stops vLLM from serving the adapter at ``path`` (empty: none).

    Args:
        path: the adapter folder.
        max_lora_rank: the serving engine's ``max_lora_rank``; ``None`` checks only against
            the largest rank vLLM accepts at all.
        require_card: a missing ``card.json`` is a problem (this toolkit's adapters have one).
        base: a model name or folder; a card naming another base model (by sha256) is a
            problem.
    """
    folder = Path(path).expanduser()
    if is_probe_folder(folder):  # a probe has no LoRA files: its own checks
        return probe_problems(folder, base=base)
    problems: list[str] = []
    first = lora_folder_problem(folder)
    if first is not None:
        problems.append(first)
        if not folder.is_dir() or not (folder / "adapter_config.json").is_file():
            return problems  # nothing more can be read
    cfg_path = folder / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError:
        return problems  # lora_folder_problem said so
    if not isinstance(cfg, dict):
        return problems + [f"{cfg_path}: not a JSON object"]
    if cfg.get("task_type") is None:
        problems.append(f"{cfg_path}: task_type is missing (expected CAUSAL_LM)")
    if str(cfg.get("bias", "none")) != "none":
        problems.append(f"{cfg_path}: bias is {cfg.get('bias')!r}; vLLM serves only "
                        "bias=\"none\" adapters (train with bias=\"none\")")
    if cfg.get("use_dora"):
        problems.append(f"{cfg_path}: use_dora is set; vLLM does not serve DoRA adapters")
    r = cfg.get("r")
    limit = max_lora_rank if max_lora_rank is not None else VLLM_LARGEST_LORA_RANK
    ranks = [r] + list((cfg.get("rank_pattern") or {}).values())
    if not isinstance(r, int) or r < 1:
        problems.append(f"{cfg_path}: r is {r!r}, not a positive integer")
    elif max(int(x) for x in ranks) > limit:
        top = max(int(x) for x in ranks)
        where = ("the engine's max_lora_rank" if max_lora_rank is not None
                 else "the largest max_lora_rank vLLM accepts")
        problems.append(f"{cfg_path}: rank {top} is above {where} ({limit}); start the engine "
                        f"with --max-lora-rank >= {top} or train with a smaller r")
    problems += _weight_problems(folder)
    card = folder / CARD_FILE
    if require_card and not card.is_file():
        problems.append(f"adapter folder {folder} lacks {CARD_FILE} (the adapter card)")
    elif card.is_file() and base is not None:
        problems += _base_problems(card, base)
    return problems


def _weight_problems(folder: Path) -> list[str]:
    """Weights other than LoRA matrices (saved modules, biases) cannot be served."""
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        return []
    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a problem to name
        return [f"{weights}: unreadable ({exc})"]
    if not keys:
        return [f"{weights}: holds no weights"]
    other = [k for k in keys if "lora_A" not in k and "lora_B" not in k]
    if other:
        return [f"{weights}: {len(other)} tensors are not LoRA matrices (first: {other[0]}); "
                "vLLM serves only lora_A / lora_B weights"]
    return []


def _base_problems(card_path: Path, base: str) -> list[str]:
    try:
        card = json.loads(card_path.read_text())
        want = card["base_model"]["sha256"]
    except (ValueError, KeyError, TypeError):
        return [f"{card_path}: unreadable card (no base_model.sha256)"]
    got = model_hash(resolve_model(base).path)
    if got != want:
        return [f"{card_path}: the adapter was tuned on a base model with sha256 "
                f"{want[:12]}, not {base} ({got[:12]})"]
    return []


def validate_adapter(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Check an adapter; raise :class:`AdapterRefused` listing every problem, else return a
    summary (rank, alpha, target modules, card figures)."""
    problems = adapter_problems(path, **kwargs)
    folder = Path(path).expanduser()
    if problems:
        what = "it cannot rate" if is_probe_folder(folder) else "vLLM cannot serve it"
        raise AdapterRefused(f"adapter {folder}: {len(problems)} problem"
                             f"{'s' if len(problems) > 1 else ''}; {what} as it is",
                             problems)
    if is_probe_folder(folder):
        card = read_card(folder)
        return {"path": str(folder), "kind": "probe", "base": card["base_model"]["name"],
                "labels": card["labels"]["n"],
                "heads": {v: {"layer": h["layer"], "C": h["C"],
                              "kappa": card["cv"]["per_view"][v]["kappa"],
                              "auc_low": card["cv"]["per_view"][v]["auc_low"]}
                          for v, h in card["heads"].items()}}
    cfg = json.loads((folder / "adapter_config.json").read_text())
    out: dict[str, Any] = {"path": str(folder), "r": cfg.get("r"), "alpha": cfg.get("lora_alpha"),
                           "target_modules": cfg.get("target_modules"),
                           "layers": cfg.get("layers_to_transform") or "all"}
    if (folder / CARD_FILE).is_file():
        card = read_card(folder)
        out.update(base=card.get("base_model", {}).get("name"),
                   validation_kappa=card.get("validation", {}).get("kappa"),
                   labels=card.get("labels", {}).get("n"))
    return out


class AdapterRefused(UserError):
    """An adapter vLLM cannot serve; ``problems`` names each reason."""

    def __init__(self, summary: str, problems: list[str]) -> None:
        super().__init__(summary)
        self.problems = problems


# ---------------------------------------------------------------------------- the card
def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise UserError(f"{folder}: no {CARD_FILE}")
    return json.loads(path.read_text())


def write_card(folder: str | os.PathLike, card: dict[str, Any]) -> None:
    """Write ``card.json`` and ``README.md`` (the same facts for people) into ``folder``."""
    folder = Path(folder)
    write_json(folder / CARD_FILE, card)
    write_text(folder / "README.md", card_markdown(card))


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else f"{x:.3f}"


def card_markdown(card: dict[str, Any]) -> str:
    base, labels, split = card["base_model"], card["labels"], card["split"]
    val, s, tr = card["validation"], card["settings"], card["training"]
    before = val.get("before_tuning") or {}
    lines = [
        f"# Adapter {card['name']}", "",
        f"LoRA adapter for the LLMHNI rater, tuned with `llmhni finetune-rater` "
        f"({card['created']}).", "",
        f"- Base model: `{base['name']}` (sha256 `{base['sha256'][:16]}...`, {base['path']})",
        f"- Labels: {labels['n']} audited pairs (High {labels['counts']['High']}, Medium "
        f"{labels['counts']['Medium']}, Low {labels['counts']['Low']}), sha256 "
        f"`{labels['sha256'][:16]}...`"
        + (" — **SIMULATED from ratings**" if labels.get("simulated") else ""),
        f"- Split: by {split['by']}: {split['train_pairs']} training pairs "
        f"({split['train_users']} users), {split['val_pairs']} validation pairs "
        f"({split['val_users']} users); validation pairs never trained on.",
        f"- LoRA: r {s['r']}, alpha {s['alpha']}, dropout {s['dropout']}, "
        f"modules {', '.join(s['target_modules'])}, last {tr.get('tuned_layers')} layers; "
        f"task CAUSAL_LM, bias none, no modules_to_save.",
        f"- Training: {s['epochs']} epochs, lr {s['lr']}, batch {s['batch_size']}, class "
        f"weights {s['class_weights']}, views {', '.join(s['views'])}; "
        f"{tr['wall_seconds']:.0f} s ({tr['seconds_per_example']:.3f} s per example).",
        f"- Validation (last epoch): kappa {_f(val.get('kappa'))}, weighted kappa "
        f"{_f(val.get('weighted_kappa'))}, accuracy {_f(val.get('accuracy'))} on {val.get('n')} "
        f"prompts; before tuning: kappa {_f(before.get('kappa'))}, accuracy "
        f"{_f(before.get('accuracy'))}.", "",
        "Rate with it: `python cli.py rate RUN --adapter adapters/" + card["name"] + "`.", "",
        "The full card is `card.json`.", "",
    ]
    return "\n".join(lines)


def check_adapter(path: str | os.PathLike) -> Path:
    """The one check of an adapter folder before a rater uses it; returns the folder.

    A probe folder (``finetune-rater --kind probe``) gets the probe's checks
    (:func:`llmhni_local.weights.probe.probe_problems`); any other folder must be a peft LoRA
    adapter that vLLM and transformers can both serve, checked by
    :func:`llmhni_local.weights.adapters.adapter_problems` (the files and config of
    :func:`lora_folder_problem`, then ``bias``, DoRA, rank, LoRA-only weights), the same
    check ``adapters validate`` and fine-tuning run. Every rating entry point calls this
    before an engine starts. Raises :class:`UserError` naming the first problem (and how many
    more there are).
    """
    folder = Path(path).expanduser()
    problems = adapter_problems(folder, max_lora_rank=None, require_card=False)
    if problems:
        more = (f" (and {len(problems) - 1} more; `adapters validate {folder}` lists them)"
                if len(problems) > 1 else "")
        raise UserError(problems[0] + more)
    return folder


def lora_folder_problem(folder: Path) -> str | None:
    """What keeps a LoRA adapter folder from loading at all (``None``: nothing): the folder,
    ``adapter_config.json`` (``peft_type`` LORA, ``task_type`` CAUSAL_LM, no
    ``modules_to_save``) and ``adapter_model.safetensors`` (or ``.bin``)."""
    if not folder.is_dir():
        return f"adapter folder {folder} does not exist"
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        return f"adapter folder {folder} lacks adapter_config.json"
    if not any((folder / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
        return f"adapter folder {folder} lacks adapter_model.safetensors"
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError:
        return f"{cfg_path}: not valid JSON"
    if not isinstance(cfg, dict):
        return f"{cfg_path}: not a JSON object"
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        return f"{cfg_path}: peft_type {cfg.get('peft_type')!r} is not LORA"
    if cfg.get("task_type") not in (None, "CAUSAL_LM"):
        return f"{cfg_path}: task_type {cfg.get('task_type')!r} is not CAUSAL_LM"
    if cfg.get("modules_to_save"):
        return f"{cfg_path}: modules_to_save is set; vLLM cannot serve such an adapter"
    return None
