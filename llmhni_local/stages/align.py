"""Stage ``align`` (method stage 3): the alignment MLP maps the text vectors into the
recommendation space; both the aligned and the raw vectors are kept (the latter for the
no-alignment ablation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from llmhni_local.core.device import resolve_device
from llmhni_local.core.io import atomic_path, write_json
from llmhni_local.llmhni.align import similarity_vectors
from llmhni_local.stages.context import Run
from llmhni_local.text.embed import load_embeddings


def run_stage(run: Run) -> dict:
    emb = load_embeddings(run.dir)
    device = resolve_device(run.cfg.train.device)  # the alignment MLP trains where the models do
    out: dict[str, Any] = {}
    folder = run.dir / "align"
    folder.mkdir(parents=True, exist_ok=True)
    # Both similarity spaces are stored: aligned z' (LLMHNI) and raw x (no-alignment ablation).
    for name, on in (("aligned", True), ("raw", False)):
        s = dataclasses.replace(run.cfg.llmhni, alignment=on)
        zu, zi, history = similarity_vectors(emb.users, emb.items, run.data.train, s,
                                             seed=run.cfg.train.seed, device=device)
        with atomic_path(folder / f"{name}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, users=zu, items=zi)
        if history:
            write_json(folder / "history.json", history)
            out["final_loss"] = history[-1].get("loss")
        out[name] = {"dim": int(zu.shape[1])}
    return out
