"""Per-user splits: sizes, time order, determinism."""

import numpy as np
import pytest

from llmhni_local.data.splits import chronological_split, random_split


@pytest.mark.parametrize("n", [1, 2, 3, 9, 10, 11, 37])
def test_chronological_sizes_per_user(n):
    users = np.zeros(n, dtype=np.int64)
    part = chronological_split(users, np.arange(n)[::-1].copy())
    assert (part == 0).sum() == int(0.8 * n)
    assert (part == 1).sum() == int(0.9 * n) - int(0.8 * n)
    assert (part == 2).sum() == n - int(0.9 * n)


def test_chronological_follows_time_within_each_user():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 7, size=300)
    times = rng.permutation(300).astype(float)
    part = chronological_split(users, times)
    for u in np.unique(users):
        m = users == u
        t, p = times[m], part[m]
        # every training time precedes every validation time, which precedes every test time
        for earlier, later in ((0, 1), (1, 2), (0, 2)):
            if (p == earlier).any() and (p == later).any():
                assert t[p == earlier].max() < t[p == later].min()


def test_chronological_ties_keep_input_order():
    users = np.zeros(10, dtype=np.int64)
    part = chronological_split(users, np.zeros(10))
    assert part.tolist() == [0] * 8 + [1] + [2]


def test_chronological_interleaved_users_are_independent():
    users = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1] * 2)
    part = chronological_split(users, np.arange(20))
    for u in (0, 1):
        assert part[users == u].tolist() == [0] * 8 + [1] + [2]


def test_random_split_is_seeded_and_keeps_sizes():
    users = np.repeat(np.arange(5), 20)
    a = random_split(users, seed=3)
    b = random_split(users, seed=3)
    c = random_split(users, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    for u in range(5):
        assert np.bincount(a[users == u], minlength=3).tolist() == [16, 2, 2]
