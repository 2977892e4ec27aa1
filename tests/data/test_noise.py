"""Synthetic noise: exactly what was added, where, and nothing else."""

import numpy as np
import pytest

from llmhni_local.core.errors import DataError
from llmhni_local.data.dataset import Interactions
from llmhni_local.data.noise import add_synthetic_noise


def _data(ratings=True, flags=True, n_users=30, n_items=50, seed=0):
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=400, replace=False)
    pairs = np.stack([keys // n_items, keys % n_items], axis=1).astype(np.int64)
    train, val, test = pairs[:300], pairs[300:350], pairs[350:]
    rating = rng.integers(1, 6, size=300).astype(np.float32)
    return Interactions(
        name="toy", n_users=n_users, n_items=n_items, train=train, val=val, test=test,
        train_rating=rating if ratings else None,
        train_noise=(rating <= 2) if flags else None,
        user_ids=[str(u) for u in range(n_users)], item_ids=[str(i) for i in range(n_items)],
        notes=("loaded",),
    )


def _keys(arr, n_items):
    return arr[:, 0] * n_items + arr[:, 1]


@pytest.mark.parametrize("share", [0.0, 0.05, 0.1, 0.2, 1 / 3])
def test_adds_exactly_the_share_of_unobserved_pairs(share):
    d = _data()
    out = add_synthetic_noise(d, share, seed=0)
    n_new = round(share * 300)
    assert len(out.train) == 300 + n_new
    assert np.array_equal(out.train[:300], d.train)
    new = out.train[300:]
    new_keys = _keys(new, d.n_items)
    assert len(np.unique(new_keys)) == n_new
    for split in (d.train, d.val, d.test):
        assert not np.isin(new_keys, _keys(split, d.n_items)).any()
    assert np.array_equal(out.val, d.val) and np.array_equal(out.test, d.test)
    # the scenario's ground truth is the injected pairs alone
    assert not out.train_noise[:300].any() and d.train_noise.any()
    assert out.train_noise[300:].all() and out.train_noise.dtype == bool
    assert np.array_equal(out.train_rating[:300], d.train_rating)
    assert np.isnan(out.train_rating[300:]).all()
    assert out.notes[:-1] == ("loaded",) and f"added {n_new} synthetic noise" in out.notes[-1]


def test_without_flags_or_ratings():
    d = _data(ratings=False, flags=False)
    out = add_synthetic_noise(d, 0.1, seed=3)
    assert out.train_rating is None
    assert out.train_noise.tolist() == [False] * 300 + [True] * 30


def test_input_is_untouched_and_seed_decides():
    d = _data()
    before = {k: getattr(d, k).copy() for k in ("train", "val", "test", "train_rating",
                                                   "train_noise")}
    a = add_synthetic_noise(d, 0.2, seed=7)
    b = add_synthetic_noise(d, 0.2, seed=7)
    c = add_synthetic_noise(d, 0.2, seed=8)
    for k, v in before.items():
        assert np.array_equal(getattr(d, k), v)
    assert d.notes == ("loaded",) and len(d.train) == 300
    assert np.array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)


def test_draws_spread_over_users_and_items():
    d = _data()
    new = add_synthetic_noise(d, 0.5, seed=0).train[300:]
    assert len(np.unique(new[:, 0])) > 20 and len(np.unique(new[:, 1])) > 30


def test_fills_a_nearly_full_matrix_and_refuses_beyond_it():
    d = _data(n_users=20, n_items=21)  # 420 cells, 400 observed
    out = add_synthetic_noise(d, 20 / 300, seed=0)
    cells = np.sort(_keys(np.concatenate([out.train, out.val, out.test]), 21))
    assert np.array_equal(cells, np.arange(420))
    with pytest.raises(DataError, match="only 20 .* unobserved"):
        add_synthetic_noise(d, 21 / 300, seed=0)


def test_rejects_bad_share():
    for share in (-0.1, 0.51, 1.5):
        with pytest.raises(DataError, match=r"synthetic noise share must be in \[0, 0.5\]"):
            add_synthetic_noise(_data(), share, seed=0)


def test_config_rejects_rate_outside_half():
    from llmhni_local.core.config import DataSettings
    from llmhni_local.core.errors import ConfigError

    assert DataSettings(synthetic_noise=0.5).synthetic_noise == 0.5
    with pytest.raises(ConfigError, match=r"data.synthetic_noise must be in \[0, 0.5\]"):
        DataSettings(synthetic_noise=0.6)
