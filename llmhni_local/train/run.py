"""One training run written to a run folder: ``metrics.json``, ``history.json``,
``manifest.json``, ``model.pt`` (the best checkpoint) and ``per_user_test.npz`` (each test
user's metrics at that checkpoint, for paired comparisons over users)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmhni_local.core.config import TrainConfig, to_dict
from llmhni_local.core.device import device_record, resolve_device
from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, write_json
from llmhni_local.core.manifest import build_manifest
from llmhni_local.data.dataset import Interactions
from llmhni_local.eval.ranking import evaluate_ranking
from llmhni_local.models import build_model
from llmhni_local.train.objectives import RecObjective
from llmhni_local.train.trainer import FitResult, fit, seed_everything


def train_run(cfg: TrainConfig, data: Interactions, out: str | Path, *, objective=None,
              sampler=None, progress: bool = True, extra_manifest: dict | None = None) -> FitResult:
    """Train the configured backbone on ``data`` and write the run folder ``out``.

    ``objective`` defaults to :class:`~llmhni_local.train.objectives.RecObjective` on the
    training graph with ``cfg.train.loss``; LLMHNI passes its own. ``cfg.train.device`` is
    resolved first, so a device this machine lacks fails before anything is built or written;
    the manifest records the device (:func:`~llmhni_local.core.device.device_record`).
    """
    import torch

    device = resolve_device(cfg.train.device)
    out = Path(out)
    seed_everything(cfg.train.seed)  # initialisation is seeded too, not only sampling
    m = cfg.model
    model = build_model(m.name, data.n_users, data.n_items, m.dim, m.layers, m.ngcf_dropout,
                        m.init, m.init_std)
    if objective is None:
        objective = RecObjective(data.train, data.n_users, data.n_items, cfg.train)
    result = fit(model, data, objective, train=cfg.train, eval=cfg.eval, sampler=sampler,
                 progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"state_dict": result.state_dict, "model": to_dict(m),
                    "n_users": data.n_users, "n_items": data.n_items}, tmp)
    save_per_user_test(out / PER_USER_FILE, model, objective.eval_adj(), data, cfg.eval)
    write_json(out / "history.json", result.history)
    write_json(out / "manifest.json", build_manifest(
        settings=to_dict(cfg), data_sources=data.sources,
        seeds={"train": cfg.train.seed, "data": cfg.data.seed},
        extra={"device": device_record(device), **(extra_manifest or {})}))
    write_json(out / "metrics.json", {
        "val": result.val, "test": result.test, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "epoch_seconds": result.epoch_seconds,
        "device": str(device),  # epoch_seconds means little without it
        "data": data.info(), "config": to_dict(cfg),
    })
    return result


PER_USER_FILE = "per_user_test.npz"


def save_per_user_test(path: Path, model, adj, data: Interactions, eval_settings) -> None:
    """Per-user test metrics of ``model`` (already at its best checkpoint): the same numbers
    whose means are ``metrics.json``'s ``test``, one value per test user."""
    import torch

    model.eval()
    with torch.no_grad():
        u, i = model(adj)
    per_user: dict = {}
    evaluate_ranking(u, i, data.test, [data.train, data.val], ks=eval_settings.ks,
                     batch_users=eval_settings.batch_users, per_user=per_user)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **per_user)


def load_per_user_test(run_dir: str | Path) -> dict:
    """``{"users": ..., "recall@20": ..., ...}`` saved by :func:`train_run`."""
    path = Path(run_dir) / PER_USER_FILE
    if not path.is_file():
        raise UserError(f"{path}: no per-user test metrics here (train the run again)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_trained(run_dir: str | Path, data: Interactions):
    """Rebuild the best model of a run folder (for candidates and reports)."""
    import torch

    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise UserError(f"{path}: no trained model here (run `llmhni train --out {run_dir}` first)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if (ckpt["n_users"], ckpt["n_items"]) != (data.n_users, data.n_items):
        raise UserError(f"{path}: model has {ckpt['n_users']} users x {ckpt['n_items']} items, "
                        f"data has {data.n_users} x {data.n_items}")
    m = ckpt["model"]
    model = build_model(m["name"], data.n_users, data.n_items, m["dim"], m["layers"], m["ngcf_dropout"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model
