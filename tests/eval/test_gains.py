"""The paired bootstrap over users of a gain between two methods."""

import numpy as np
import pytest

from llmhni_local.eval.gains import paired_bootstrap


def test_bootstrap_of_a_constant_difference_is_a_point():
    a = np.array([[0.5, 0.2, 0.9], [0.4, 0.3, 0.8]])
    r = paired_bootstrap(a, a - 0.1, n_boot=200)
    assert r["diff"] == pytest.approx(0.1)
    assert r["lo"] == pytest.approx(0.1) and r["hi"] == pytest.approx(0.1)
    assert (r["n_users"], r["n_seeds"]) == (3, 2)


def test_bootstrap_two_users_by_hand():
    # d = (0, 1): a resample of two users has mean 0 (prob 1/4), 0.5 (1/2) or 1 (1/4); the
    # 2.5% and 97.5% quantiles of many resamples are therefore 0 and 1.
    r = paired_bootstrap(np.array([[1.0, 2.0]]), np.array([[1.0, 1.0]]), n_boot=4000, seed=1)
    assert r["diff"] == pytest.approx(0.5)
    assert r["lo"] == 0.0 and r["hi"] == 1.0


def test_bootstrap_averages_seeds_per_user_first():
    # user 0 gains 0.2 on one seed and 0 on the other: d_0 = 0.1; user 1 gains 0.1 on both
    a = np.array([[0.2, 0.1], [0.0, 0.1]])
    r = paired_bootstrap(a, np.zeros((2, 2)), n_boot=500)
    assert r["diff"] == pytest.approx(0.1) and r["lo"] == pytest.approx(0.1)


def test_bootstrap_interval_covers_and_narrows_with_users():
    rng = np.random.default_rng(0)
    small = paired_bootstrap(rng.normal(0.05, 0.2, (1, 100)), np.zeros((1, 100)))
    large = paired_bootstrap(rng.normal(0.05, 0.2, (1, 10000)), np.zeros((1, 10000)))
    assert small["lo"] < small["diff"] < small["hi"]
    assert large["lo"] < 0.05 < large["hi"]
    assert large["hi"] - large["lo"] < (small["hi"] - small["lo"]) / 5


def test_bootstrap_refuses_unpaired_input():
    with pytest.raises(ValueError, match="must match"):
        paired_bootstrap(np.zeros((2, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least one user"):
        paired_bootstrap(np.zeros((1, 0)), np.zeros((1, 0)))
