"""Stage ``rec_pre``: the pretrained recommender (the backbone with BPR) whose scores choose
the candidate pairs, and the score functions read from it or from a saved matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from llmhni_local.core.errors import UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.graph.adjacency import bipartite_adjacency
from llmhni_local.stages.context import Run
from llmhni_local.train.run import load_trained, train_run


def run_stage(run: Run) -> dict:
    cfg = run.cfg.train_config(loss="bpr")
    run.log(f"[rec_pre] {cfg.model.name} + BPR on {run.data.name}")
    r = train_run(cfg, run.data, run.dir / "rec_pre", progress=run.progress)
    return {"best_epoch": r.best_epoch, "test": r.test, "val": r.val,
            "epoch_seconds": r.epoch_seconds}


def score_fn_from_run(pretrained: str | Path,
                      dataset: "Interactions") -> Callable[[np.ndarray], np.ndarray]:
    """``score_fn(users) -> scores`` of a trained recommender run (s = <e_u, e_i>)."""
    import torch

    model = load_trained(Path(pretrained), dataset)
    adj = bipartite_adjacency(dataset.train, dataset.n_users, dataset.n_items)
    with torch.no_grad():
        u, i = model(adj)
    u, i = u.float(), i.float()

    def score_fn(users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (u[torch.as_tensor(users)] @ i.T).numpy()

    return score_fn


def score_fn_from_matrix(path: str | Path,
                         dataset: "Interactions") -> Callable[[np.ndarray], np.ndarray]:
    """``score_fn`` reading rows of a saved ``(users x items)`` ``.npy`` score matrix."""
    matrix = np.load(path, mmap_mode="r")
    if matrix.shape != (dataset.n_users, dataset.n_items):
        raise UserError(f"{path}: shape {matrix.shape}, expected "
                        f"({dataset.n_users}, {dataset.n_items})")
    return lambda users: np.asarray(matrix[users])
