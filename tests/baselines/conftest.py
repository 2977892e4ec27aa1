"""Fixtures of the baseline tests: one torch thread, and a toy split to train on.

(``tests`` is shadowed by a site-packages package, so shared helpers are fixtures, not imports.)
"""

import math

import numpy as np
import pytest
import torch

from llmhni_local.core.config import EvalSettings, TrainSettings
from llmhni_local.data.dataset import Interactions


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads (and the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _toy_data(seed=0, n_users=30, n_items=40):
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.stack([rng.integers(0, n_users, 700), rng.integers(0, n_items, 700)], 1),
                      axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    n = len(pairs)
    return Interactions("toy", n_users, n_items, pairs[: int(0.8 * n)],
                        pairs[int(0.8 * n): int(0.9 * n)], pairs[int(0.9 * n):])


@pytest.fixture
def toy_data():
    """A random 30-user, 40-item split (80/10/10), seeded: ``toy_data(seed=...)``."""
    return _toy_data


def _fits_and_evaluates_clean(make_objective, cls, fall: float) -> None:
    """12 epochs of ``make_objective(data, train_settings)`` on backbone ``cls``: a finite loss
    whose last three epochs average below ``fall`` times the first three, a falling rec term,
    the contrastive part reported, and evaluation that reads the unperturbed model (two
    evaluations agree with the fit's test figures)."""
    from llmhni_local.train.trainer import evaluate_model, fit

    data = _toy_data()
    ts = TrainSettings(epochs=12, batch_size=128, lr=0.05, eval_every=6, patience=5,
                       min_epochs=1, device="cpu")
    obj = make_objective(data, ts)
    torch.manual_seed(0)
    model = cls(data.n_users, data.n_items, dim=16, layers=2)
    res = fit(model, data, obj, train=ts, eval=EvalSettings(ks=(5,)), progress=False)
    rows = res.history
    assert len(rows) == 12 and all(math.isfinite(r["loss"]) for r in rows)
    assert {"rec", "l2", "cl"} <= set(rows[0])
    assert np.mean([r["loss"] for r in rows[-3:]]) < fall * np.mean([r["loss"] for r in rows[:3]])
    assert rows[-1]["rec"] < rows[0]["rec"]
    first = evaluate_model(model, obj.eval_adj(), data, "test", EvalSettings(ks=(5,)))
    second = evaluate_model(model, obj.eval_adj(), data, "test", EvalSettings(ks=(5,)))
    assert first == second == res.test


@pytest.fixture
def fits_and_evaluates_clean():
    return _fits_and_evaluates_clean
