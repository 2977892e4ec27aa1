"""A fitted probe rater as the rater room serves it: the head, its file and its checks.

A probe is a linear head per view on the base model's hidden state at the answer position
(fitted by :mod:`llmhni_local.tune.probe`). Its folder holds ``probe.safetensors`` (per view:
the standardisation and the weights), ``card.json`` (kind ``probe``, base model sha256, layer
per view) and ``pairs.json``; :class:`llmhni_local.backends.probe_backend.ProbeRater`
rates with it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from llmhni_local.core.errors import UserError
from llmhni_local.engine.api import LABELS
from llmhni_local.weights.registry import PROBE_CARD_FILE as CARD_FILE
from llmhni_local.weights.registry import PROBE_FILE, model_hash, resolve_model

PROBE_FORMAT = "llmhni-probe-card/1"


@dataclass(frozen=True)
class Head:
    """A fitted head: ``probs = softmax(((x - mean) / scale) @ weight.T + bias)``."""

    mean: np.ndarray  # (hidden,)
    scale: np.ndarray  # (hidden,)
    weight: np.ndarray  # (3, hidden)
    bias: np.ndarray  # (3,)

    def probs(self, x: np.ndarray) -> np.ndarray:
        """``(n, 3)`` class probabilities (in :data:`~llmhni_local.engine.api.LABELS` order)."""
        z = ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weight.T + self.bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def head_tensors(heads: dict[str, Head]) -> dict[str, np.ndarray]:
    """Flat ``{view.part: array}`` for a safetensors file."""
    return {f"{view}.{part}": np.ascontiguousarray(getattr(h, part), dtype=np.float64)
            for view, h in heads.items() for part in ("mean", "scale", "weight", "bias")}


def heads_from_tensors(tensors: dict[str, np.ndarray]) -> dict[str, Head]:
    views = sorted({k.split(".", 1)[0] for k in tensors})
    return {v: Head(**{p: np.asarray(tensors[f"{v}.{p}"], dtype=np.float64)
                       for p in ("mean", "scale", "weight", "bias")}) for v in views}


def probe_problems(path: str | os.PathLike, base: str | None = None) -> list[str]:
    """Everything that stops a probe folder from rating (empty: none): the card (kind, format,
    heads), the head file (readable, a head per view of the card's shape) and, when ``base``
    is given, that the card names that base model (by sha256)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return [f"probe folder {folder} does not exist"]
    try:
        card = json.loads((folder / CARD_FILE).read_text())
        heads_meta = card["heads"]
        want = card["base_model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{folder / CARD_FILE}: missing or not a probe card (no heads, no base_model)"]
    problems = []
    if card.get("kind") != "probe" or card.get("format") != PROBE_FORMAT:
        problems.append(f"{folder / CARD_FILE}: kind {card.get('kind')!r} / format "
                        f"{card.get('format')!r}, expected probe / {PROBE_FORMAT}")
    problems += _head_file_problems(folder / PROBE_FILE, heads_meta)
    if base is not None:
        got = model_hash(resolve_model(base).path)
        if got != want:
            problems.append(f"{folder / CARD_FILE}: the probe was fitted on a base model with "
                            f"sha256 {want[:12]}, not {base} ({got[:12]})")
    return problems


def _head_file_problems(path: Path, heads_meta: dict) -> list[str]:
    if not path.is_file():
        return [f"{path} is missing (the probe's heads)"]
    try:
        heads = heads_from_tensors(load_file(str(path)))
    except Exception as exc:  # noqa: BLE001 - any unreadable head file is a problem to name
        return [f"{path}: unreadable ({exc})"]
    problems = []
    for view in ("user", "item"):
        h, meta = heads.get(view), heads_meta.get(view)
        if h is None or meta is None:
            problems.append(f"{path}: no head for the {view} view")
            continue
        d = int(meta.get("hidden_size", -1))
        if h.weight.shape != (len(LABELS), d) or h.mean.shape != (d,) \
                or h.scale.shape != (d,) or h.bias.shape != (len(LABELS),):
            problems.append(f"{path}: the {view} head's shapes {h.weight.shape} do not match "
                            f"the card (3 x {d})")
    return problems


def load_probe(path: str | os.PathLike) -> tuple[dict[str, Any], dict]:
    """``(card, heads)`` of a checked probe folder: ``heads[view] = (layer, Head)``."""
    
    folder = Path(path).expanduser()
    problems = probe_problems(folder)
    if problems:
        raise UserError(problems[0])
    card = json.loads((folder / CARD_FILE).read_text())
    heads = heads_from_tensors(load_file(str(folder / PROBE_FILE)))
    return card, {v: (int(card["heads"][v]["layer"]), heads[v]) for v in ("user", "item")}


def card_pairs(folder: str | Path) -> list[list[int]]:
    """The pairs that fitted a probe (``pairs.json``)."""
    return json.loads((Path(folder) / "pairs.json").read_text())["train"]
