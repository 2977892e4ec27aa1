"""WBPR draws its negatives by popularity, never a positive of the user."""

import numpy as np
import pytest

from llmhni_local.baselines.wbpr import PopularityNegatives, WBPRSettings, popularity_sampler
from llmhni_local.core.errors import ConfigError


def test_draws_follow_count_to_the_exponent():
    counts = np.array([1, 2, 4, 8, 0])
    s = PopularityNegatives(np.array([[0, 4]]), counts, 1.0)
    draws = s.sample(np.ones(80_000, dtype=np.int64), np.random.default_rng(0))
    freq = np.bincount(draws, minlength=5) / len(draws)
    assert np.allclose(freq[:4], counts[:4] / counts.sum(), atol=0.01)
    assert freq[4] == 0  # never seen in training, never drawn
    half = PopularityNegatives(np.array([[0, 4]]), counts, 0.5)
    freq = np.bincount(half.sample(np.ones(80_000, dtype=np.int64), np.random.default_rng(0)),
                       minlength=5) / 80_000
    w = np.sqrt(counts[:4])
    assert np.allclose(freq[:4], w / w.sum(), atol=0.01)


def test_never_a_positive_and_more_popular_than_uniform():
    rng = np.random.default_rng(1)
    n_users, n_items = 50, 40
    pop = rng.zipf(1.6, size=n_items).clip(1, 200)
    edges = np.array([[u, i] for u in range(n_users) for i in range(n_items)
                      if rng.random() < min(0.9, pop[i] / 60)])
    s = popularity_sampler(edges, n_items, WBPRSettings())
    users = np.repeat(np.arange(n_users), 200)
    neg = s.sample(users, np.random.default_rng(0))
    keys = set(map(tuple, edges.tolist()))
    assert not any((u, i) in keys for u, i in zip(users.tolist(), neg.tolist()))
    counts = np.bincount(edges[:, 1], minlength=n_items)
    uniform = np.random.default_rng(0).integers(0, n_items, size=len(users))
    assert counts[neg].mean() > 1.3 * counts[uniform].mean()


def test_exponent_out_of_range_names_the_setting():
    with pytest.raises(ConfigError, match="baselines.wbpr.exponent"):
        WBPRSettings(exponent=-1)
