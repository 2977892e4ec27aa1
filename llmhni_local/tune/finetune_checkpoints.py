"""The fine-tune's fingerprint (everything that decides what it produces) and its per-epoch
checkpoints: a killed run started again with the same fingerprint resumes after the last
finished epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def fingerprint(parts: dict[str, Any]) -> str:
    from llmhni_local.core.io import sha256_text

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


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    from llmhni_local.core.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def latest_checkpoint(work: Path, fingerprint: str, epochs: int):
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
