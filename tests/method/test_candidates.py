"""Candidate selection: right items per kind, training data only, fair budget."""

from __future__ import annotations

import numpy as np
import pytest

from llmhni_local.errors import ConfigError, DataError, UserError
from llmhni_local.method.candidates import (CandidateSettings, count_kinds, load_candidates,
                                            save_candidates, select_candidates)


def _setup(n_users=6, n_items=12, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_users, n_items))
    train = [np.sort(rng.choice(n_items, size=4, replace=False)) for _ in range(n_users)]
    return scores, train


def test_hand_example():
    s = np.array([[0.9, 0.1, 0.5, 0.3, 0.8],
                  [0.0, 0.2, 0.4, 0.6, 0.8]])
    train = [np.array([0, 3, 4]), np.array([1])]
    c = select_candidates(lambda u: s[u], train, 5, k_neg=2, k_pos=2)
    got = [(int(r["user"]), int(r["item"]), str(r["kind"]), int(r["rank"])) for r in c]
    assert got == [
        (0, 2, "unobserved", 0), (0, 1, "unobserved", 1),  # highest unobserved: 0.5, 0.1
        (0, 3, "observed", 0), (0, 4, "observed", 1),      # lowest observed: 0.3, 0.8
        (1, 4, "unobserved", 0), (1, 3, "unobserved", 1),
        (1, 1, "observed", 0),                              # only one training item
    ]
    assert c["score"][0] == pytest.approx(0.5)


@pytest.mark.parametrize("k_neg,k_pos", [(3, 2), (0, 2), (4, 0)])
def test_kinds_respect_training_lists(k_neg, k_pos):
    scores, train = _setup()
    c = select_candidates(lambda u: scores[u], train, 12, k_neg=k_neg, k_pos=k_pos)
    for r in c:
        in_train = int(r["item"]) in train[int(r["user"])]
        assert in_train == (r["kind"] == "observed")
    for u in range(6):
        mine = c[c["user"] == u]
        unobs = mine[mine["kind"] == "unobserved"]
        obs = mine[mine["kind"] == "observed"]
        assert len(unobs) == k_neg and len(obs) == k_pos
        free = np.setdiff1d(np.arange(12), train[u])
        if k_neg:  # no unobserved item outside the list scores higher than the lowest chosen
            assert scores[u, free].max() == pytest.approx(unobs["score"].max())
            rest = np.setdiff1d(free, unobs["item"])
            assert scores[u, rest].max() <= unobs["score"].min()
        if k_pos:
            rest = np.setdiff1d(train[u], obs["item"])
            assert scores[u, rest].min() >= obs["score"].max()


def test_held_out_items_are_not_excluded():
    # The stage sees training lists only: a test item with a top score is a candidate.
    s = np.array([[0.0, 0.1, 9.0, 0.2]])
    c = select_candidates(lambda u: s[u], [np.array([0])], 4, k_neg=1, k_pos=1)
    assert c[c["kind"] == "unobserved"]["item"].tolist() == [2]


def test_budget_is_split_by_kind_and_round_robin_over_users():
    scores, train = _setup(n_users=10)
    full = select_candidates(lambda u: scores[u], train, 12, k_neg=3, k_pos=1)
    c = select_candidates(lambda u: scores[u], train, 12, k_neg=3, k_pos=1, budget=17, seed=1)
    assert len(c) == 17
    counts = count_kinds(c)
    assert counts == {"unobserved": 13, "observed": 4}  # ceil(17 * 3/4) = 13
    per_user = np.bincount(c[c["kind"] == "unobserved"]["user"], minlength=10)
    assert per_user.max() - per_user.min() <= 1  # as equal as possible
    # inside a user, the most confident candidates come first
    for u in range(10):
        ranks = c[(c["user"] == u) & (c["kind"] == "unobserved")]["rank"]
        assert ranks.tolist() == list(range(len(ranks)))
    # a subset of the full set
    full_set = {(int(a), int(b)) for a, b in zip(full["user"], full["item"])}
    assert {(int(a), int(b)) for a, b in zip(c["user"], c["item"])} <= full_set
    # seeded: same seed same pairs, another seed other users
    again = select_candidates(lambda u: scores[u], train, 12, k_neg=3, k_pos=1, budget=17,
                              seed=1)
    assert np.array_equal(again, c)
    other = select_candidates(lambda u: scores[u], train, 12, k_neg=3, k_pos=1, budget=17,
                              seed=2)
    assert not np.array_equal(other, c)


def test_budget_leftover_goes_to_the_other_kind():
    s = np.arange(10, dtype=float)[None, :].repeat(3, 0)
    train = [np.array([0]), np.array([1]), np.array([2])]  # one observed pair per user
    c = select_candidates(lambda u: s[u], train, 10, k_neg=5, k_pos=5, budget=12)
    assert count_kinds(c) == {"unobserved": 9, "observed": 3}


def test_batches_give_the_same_result():
    scores, train = _setup(n_users=7)
    calls = []

    def fn(users):
        calls.append(len(users))
        return scores[users]

    a = select_candidates(fn, train, 12, k_neg=2, k_pos=2, batch_users=3)
    b = select_candidates(lambda u: scores[u], train, 12, k_neg=2, k_pos=2)
    assert calls == [3, 3, 1]
    assert np.array_equal(a, b)


def test_bad_scores_and_settings():
    with pytest.raises(DataError, match="shape"):
        select_candidates(lambda u: np.zeros((len(u), 3)), [np.array([0])], 4, k_neg=1, k_pos=1)
    with pytest.raises(DataError, match="non-finite"):
        select_candidates(lambda u: np.full((len(u), 4), np.nan), [np.array([0])], 4, k_neg=1,
                          k_pos=1)
    with pytest.raises(ConfigError):
        CandidateSettings(k_neg=0, k_pos=0)
    with pytest.raises(ConfigError):
        CandidateSettings(budget=-1)


def test_save_load_round_trip(tmp_path):
    scores, train = _setup()
    c = select_candidates(lambda u: scores[u], train, 12, k_neg=2, k_pos=1)
    save_candidates(tmp_path / "c.parquet", c)
    assert np.array_equal(load_candidates(tmp_path / "c.parquet"), c)
    with pytest.raises(UserError, match="run the `candidates` stage"):
        load_candidates(tmp_path / "none.parquet")
