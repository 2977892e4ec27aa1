"""The LoRA adapter's card (``card.json``), the fingerprint of a fine-tune's inputs, and the
folder the adapter is saved in.

The fingerprint (:func:`fingerprint_inputs`) covers everything that decides what a fine-tune
produces; it names the checkpoints a killed run may resume from, and :func:`card_fingerprint`
reads it back from a card, so an adapter tuned on the same inputs can be reused. The finished
adapter is assembled in a temporary sibling folder, checked by
:func:`llmhni_local.weights.adapters.adapter_problems` and renamed into place, so a killed save
leaves no half-written adapter.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import publish_folder, sha256_text
from llmhni_local.engine.api import LABELS
from llmhni_local.weights.adapters import adapter_problems, write_card

CARD_FORMAT = "llmhni-adapter-card/1"


def fingerprint(parts: dict[str, Any]) -> str:

    return sha256_text(json.dumps(parts, sort_keys=True, default=str))


def fingerprint_inputs(settings: dict, base_sha: str, labels_sha: str, profiles_sha: str,
                       max_liked: int,
                       templates: dict, label_ids: dict, answers: dict) -> dict[str, Any]:
    """Everything that decides what a fine-tune produces (its fingerprint's parts)."""
    return {"settings": settings, "base": base_sha, "labels": labels_sha,
            "profiles": profiles_sha, "max_liked": max_liked, "templates": templates,
            "label_ids": label_ids, "answers": answers}


def card_fingerprint(card: dict[str, Any]) -> str | None:
    """The fingerprint of the inputs an adapter card records (``None`` if it lacks any)."""
    try:
        pr = card["prompts"]
        parts = fingerprint_inputs(card["settings"], card["base_model"]["sha256"],
                                   card["labels"]["sha256"], pr["profiles_sha256"],
                                   pr["max_liked"], pr["templates"], pr["label_tokens"],
                                   pr["answer_tokens"])
    except (KeyError, TypeError):
        return None
    return fingerprint(parts)  # lists where the settings had tuples: the same JSON text


def lora_card(job: Any, history: list[dict], seconds: float, resumed_from: int,
              runner: Any, reused: int, n_layers: int,
              label_sources: Sequence[dict], run_dir) -> dict[str, Any]:
    """The card of the adapter a fine-tune produced (``job``: its prepared inputs)."""
    import peft
    import torch
    import transformers

    s, labels, users = job.settings, job.labels, job.users
    final = history[-1].get("val", {}) if history else {}
    before = history[0]["val"] if history and history[0]["epoch"] == 0 else None
    n_examples = len(job.train_ex.ids) * s.epochs
    return {
        "format": CARD_FORMAT,
        "name": job.out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": {"name": s.base, "path": str(job.spec.path), "sha256": job.base_sha,
                       "kind": job.spec.kind,
                       "source": str(job.spec.source) if job.spec.source else None},
        "labels": {
            "sha256": job.labels_sha, "n": int(len(labels)),
            "counts": {lab: int(job.lab_list.count(lab)) for lab in LABELS},
            "simulated": bool(labels["simulated"].astype(bool).all())
            if "simulated" in labels else False,
            "sources": list(label_sources), "run": str(run_dir) if run_dir else None},
        "split": {"by": job.split_how, "val_share": s.val_share,
                  "train_pairs": int(len(job.train_idx)), "val_pairs": int(len(job.val_idx)),
                  "train_users": int(len(np.unique(users[job.train_idx]))),
                  "val_users": int(len(np.unique(users[job.val_idx]))) if len(job.val_idx)
                  else 0},
        "settings": dataclasses.asdict(s),
        "prompts": {"templates": {n: t.hash for n, t in job.templates.items()},
                    "max_liked": job.max_liked, "profiles_sha256": job.profiles_sha,
                    "label_tokens": job.label_ids, "views": list(s.views),
                    "answer_tokens": job.answers,
                    "target": ("the label's tokens and the end-of-turn token after the prompt"
                               if s.answer == "label" else
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
        "training": {"wall_seconds": seconds, "examples_per_epoch": len(job.train_ex.ids),
                     "frozen_prefix_cache": bool(runner.cut),
                     "prefix_states_reused": int(reused), "tuned_layers":
                     s.last_layers if 0 < s.last_layers < n_layers else n_layers,
                     "seconds_per_example": seconds / max(1, n_examples),
                     "epochs": s.epochs, "resumed_after_epoch": resumed_from},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
    }


def save_adapter(model: Any, out: Path, card: dict[str, Any], pairs: list, train_idx,
                 val_idx, split_how: str) -> dict[str, Any]:
    """Write the adapter, ``pairs.json`` and the card into a temporary sibling of ``out``,
    check that it is servable, rename it into place; returns the card as stored."""
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
        publish_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json.loads((out / "card.json").read_text())  # as stored, as a reused card comes back
