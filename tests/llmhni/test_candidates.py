"""Candidate selection: right items per kind, training data only, fair budget."""

from __future__ import annotations

import numpy as np
import pytest

from llmhni_local.core.errors import ConfigError, DataError, UserError
from llmhni_local.llmhni.candidates import (
    CANDIDATE_DTYPE,
    CandidateSettings,
    count_kinds,
    load_candidates,
    save_candidates,
    select_candidates,
)


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


def test_k_pos_share_per_user_count():
    from llmhni_local.llmhni.candidates import n_observed

    # max(k_pos, ceil(share * n_u)), never more than n_u
    assert n_observed(10, 0, 0.2) == 2
    assert n_observed(11, 0, 0.2) == 3          # ceil(2.2)
    assert n_observed(10, 5, 0.2) == 5          # the count is a floor
    assert n_observed(40, 5, 0.2) == 8
    assert n_observed(3, 5, 0.0) == 3
    assert n_observed(10, 0, 0.3) == 3          # 0.3 * 10 is 3, not ceil(3.0000000004)
    scores = np.arange(20, dtype=float)[None, :].repeat(2, 0)
    train = [np.arange(10), np.arange(20)]
    c = select_candidates(lambda u: scores[u], train, 20, k_neg=0, k_pos=0, k_pos_share=0.25)
    assert count_kinds(c) == {"unobserved": 0, "observed": 3 + 5}
    # lowest-scored first
    assert c[c["user"] == 1]["item"].tolist() == [0, 1, 2, 3, 4]


def test_share_budget_splits_by_list_sizes():
    scores, train = _setup(n_users=6, n_items=12)
    c = select_candidates(lambda u: scores[u], train, 12, k_neg=1, k_pos=0, k_pos_share=0.75,
                          budget=12)
    # full lists: 6 unobserved, 18 observed -> a budget of 12 splits 3 : 9
    assert count_kinds(c) == {"unobserved": 3, "observed": 9}


def test_coverage_counts_flagged_edges_among_observed_candidates():
    from llmhni_local.llmhni.candidates import coverage

    train = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 3]])
    noise = np.array([True, False, True, True, False])
    c = np.array([(0, 0, "observed", 0, 0.0), (0, 1, "observed", 1, 0.0),
                  (1, 0, "unobserved", 0, 0.0),   # not observed: does not cover (1, 0)
                  (1, 3, "observed", 0, 0.0)], dtype=CANDIDATE_DTYPE)
    assert coverage(c, train, noise) == {"flagged": 3, "covered": 1, "coverage": 1 / 3}
    assert coverage(c, train, None) == {}
    assert np.isnan(coverage(c, train, np.zeros(5, bool))["coverage"])


@pytest.mark.parametrize("kw,setting", [
    ({"k_neg": 0, "k_pos": 0}, "would be empty"),
    ({"k_pos_share": -0.1}, "candidates.k_pos_share"),
    ({"k_pos_share": 1.1}, "candidates.k_pos_share"),
    ({"budget": -5}, "candidates.budget"),
])
def test_settings_that_select_nothing_are_refused(kw, setting):
    with pytest.raises(ConfigError, match=setting):
        CandidateSettings(**kw)
    assert CandidateSettings(k_neg=0, k_pos=0, k_pos_share=0.2).k_pos_share == 0.2
