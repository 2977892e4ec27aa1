"""The training loop: epochs of mini-batches, validation for early stopping, test read once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from llmhni_local.core.config import EvalSettings, TrainSettings
from llmhni_local.core.device import index_tensor, resolve_device
from llmhni_local.core.progress import progress_bar
from llmhni_local.data.dataset import Interactions
from llmhni_local.eval.ranking import evaluate_ranking
from llmhni_local.train.samplers import UniformNegatives


@dataclass
class FitResult:
    """What a training run produced.

    ``val`` holds the validation metrics at the best epoch, ``test`` the test metrics of that
    same checkpoint (computed once, after training).
    """

    best_epoch: int
    val: dict[str, float]
    test: dict[str, float]
    history: list[dict] = field(default_factory=list)
    epoch_seconds: float = 0.0
    epochs_run: int = 0
    state_dict: dict | None = None


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return the numpy generator used for sampling."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def stop_metric(ks: tuple[int, ...]) -> str:
    """Early-stopping metric: validation Recall@20 (docs/METHOD.md), or Recall at the largest K."""
    return "recall@20" if 20 in ks else f"recall@{max(ks)}"


def fit(model: torch.nn.Module, data: Interactions, objective, *, train: TrainSettings,
        eval: EvalSettings, sampler=None, progress: bool = True,
        on_eval: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``model`` with ``objective`` and early-stop on validation.

    Args:
        model: a backbone (:class:`llmhni_local.models.Backbone`): the toolkit's LightGCN or
            NGCF, or any PyG model wrapped in :class:`llmhni_local.models.PyGBackbone`.
        data: the data set; its ``train`` pairs are masked at evaluation time.
        objective: callable ``(model, users, pos, neg) -> BatchLoss`` with ``positives``,
            ``start_epoch(epoch, rng)``, ``eval_adj()``, ``to(device)`` and ``parameters()``
            (weights of its own that Adam trains with the model's, such as a projection
            head; none for most; see :mod:`.objectives`).
        train: the ``[train]`` settings; ``train.device`` says where ``model`` and
            ``objective`` are moved (they stay there after the call).
        eval: the ``[eval]`` settings.
        sampler: negative sampler with ``sample(users, rng)``; default uniform over items the
            user has no positive with (in the objective's graph or in the training data).
            It draws on the CPU from the trainer's numpy generator, on every device.
        progress: show a progress bar over epochs.
        on_eval: called with each history row after a validation evaluation.
    """
    device = resolve_device(train.device)
    if train.threads > 0:
        torch.set_num_threads(train.threads)
    model.to(device)
    objective.to(device)
    rng = seed_everything(train.seed)
    positives = objective.positives
    if sampler is None:
        sampler = UniformNegatives(np.concatenate([positives, data.train]), data.n_items)
    opt = torch.optim.Adam([*model.parameters(), *objective.parameters()], lr=train.lr)
    key = stop_metric(eval.ks)
    best_value, best_epoch, best_state, best_val = -1.0, 0, None, {}
    bad_evals, history, train_time, epochs_run = 0, [], 0.0, 0

    with progress_bar("train", train.epochs, enabled=progress, fields=("loss", "best")) as bar:
        for epoch in range(1, train.epochs + 1):
            t0 = time.perf_counter()
            sums, n_batches = train_epoch(model, objective, sampler, opt, epoch, rng,
                                          batch_size=train.batch_size, device=device)
            train_time += time.perf_counter() - t0
            epochs_run = epoch
            row = {"epoch": epoch, **{k: v / max(1, n_batches) for k, v in sums.items()}}
            bar.advance(1, loss=row["loss"], best=max(best_value, 0.0))
            if epoch % train.eval_every == 0 or epoch == train.epochs:
                val = evaluate_model(model, objective.eval_adj(), data, "val", eval)
                row["val"] = val
                if val[key] > best_value:
                    best_value, best_epoch, best_val = val[key], epoch, val
                    best_state = cpu_state(model)
                    bad_evals = 0
                else:
                    bad_evals += 1
                if on_eval is not None:
                    on_eval(row)
                history.append(row)
                if bad_evals >= train.patience and epoch >= train.min_epochs:
                    break
            else:
                history.append(row)
    if best_state is not None:
        model.load_state_dict(best_state)
    test = evaluate_model(model, objective.eval_adj(), data, "test", eval)
    return FitResult(best_epoch=best_epoch, val=best_val, test=test, history=history,
                     epoch_seconds=train_time / max(1, epochs_run), epochs_run=epochs_run,
                     state_dict=best_state)


def train_epoch(model: torch.nn.Module, objective, sampler, opt, epoch: int,
                rng: np.random.Generator, *, batch_size: int,
                device: torch.device) -> tuple[dict[str, float], int]:
    """One epoch over the objective's positives in a seeded order; returns the summed loss
    parts and the number of batches."""
    model.train()
    objective.start_epoch(epoch, rng)
    positives = objective.positives
    order = rng.permutation(len(positives))
    users_all = positives[order, 0]
    pos_all = positives[order, 1]
    neg_all = sampler.sample(users_all, rng)
    sums: dict[str, float] = {}
    n_batches = 0
    for start in range(0, len(order), batch_size):
        sl = slice(start, start + batch_size)
        # One copy per index array and batch; every op of the loss then indexes on the
        # device (a no-op view on the CPU).
        out = objective(model, index_tensor(users_all[sl], device),
                        index_tensor(pos_all[sl], device),
                        index_tensor(np.asarray(neg_all[sl]), device))
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        sums["loss"] = sums.get("loss", 0.0) + float(out.total.detach())
        for k, v in out.parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n_batches += 1
    return sums, n_batches


def cpu_state(model: torch.nn.Module) -> dict:
    """A copy of ``model``'s weights on the CPU: the best checkpoint costs no GPU memory and
    saves and loads anywhere (the values are the model's, bit for bit)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def evaluate_model(model: torch.nn.Module, adj: torch.Tensor, data: Interactions, split: str,
                   eval: EvalSettings) -> dict[str, float]:
    """Full-ranking metrics on ``split`` ("val" or "test"); training items (and validation
    items when testing) are masked."""
    model.eval()
    with torch.no_grad():
        u, i = model(adj)
    masked = [data.train] if split == "val" else [data.train, data.val]
    return evaluate_ranking(u, i, getattr(data, split), masked, ks=eval.ks,
                            batch_users=eval.batch_users)
