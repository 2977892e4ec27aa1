"""The package's statistics (``llmhni_local.eval.stats``) against values worked out by hand in
the comments, and against brute force where a formula has one."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from llmhni_local.eval.stats import (
    auc,
    binary_confusion,
    binary_kappa,
    bootstrap_indices,
    cohen_kappa,
    cross_fit,
    group_folds,
    percentile_interval,
)


# ---------------------------------------------------------------------------- AUC
def _pairwise_auc(scores, positive):
    """P(positive > negative) + P(tie) / 2 over every (positive, negative) pair."""
    pos, neg = scores[positive], scores[~positive]
    wins = sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_by_hand():
    # positives 0.35, 0.8; negatives 0.1, 0.4: 0.35 beats 0.1, loses to 0.4; 0.8 beats both
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    # a perfect and a reversed ranking
    assert auc(np.array([3.0, 4.0, 1.0, 2.0]), np.array([1, 1, 0, 0], bool)) == 1.0
    assert auc(np.array([3.0, 4.0, 1.0, 2.0]), np.array([0, 0, 1, 1], bool)) == 0.0


def test_auc_ties_count_half():
    # positives 2, 3; negatives 1, 2: 2>1 (1), 2=2 (1/2), 3>1 (1), 3>2 (1) -> 3.5 / 4
    assert auc(np.array([1.0, 2.0, 2.0, 3.0]), np.array([0, 1, 0, 1], bool)) == 0.875
    assert auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5  # one tie: a coin
    assert auc(np.full(6, 7.0), np.arange(6) < 2) == 0.5  # all tied


def test_auc_matches_the_pairwise_count_and_ignores_row_order():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.3
    want = _pairwise_auc(scores, positive)
    assert auc(scores, positive) == pytest.approx(want, abs=1e-12)
    order = rng.permutation(60)
    assert auc(scores[order], positive[order]) == pytest.approx(want, abs=1e-12)


def test_auc_is_nan_with_one_class_and_checks_shapes():
    assert math.isnan(auc(np.array([1.0, 2.0]), np.array([True, True])))
    assert math.isnan(auc(np.array([1.0, 2.0]), np.array([False, False])))
    assert math.isnan(auc(np.array([]), np.array([], bool)))
    with pytest.raises(ValueError, match="class flags"):
        auc(np.array([1.0, 2.0]), np.array([True]))


# ---------------------------------------------------------------------------- kappa
# Rows audit (High, Medium, Low), columns rater. n = 40, diagonal 27.
CM = np.array([[10, 4, 1],
               [3, 8, 2],
               [1, 2, 9]])


def test_kappa_by_hand():
    # rows 15, 13, 12; columns 14, 14, 12; p_e = (15*14 + 13*14 + 12*12) / 1600 = 0.335
    # kappa = (0.675 - 0.335) / (1 - 0.335) = 0.34 / 0.665
    assert cohen_kappa(CM) == pytest.approx(0.34 / 0.665, abs=1e-12)
    assert cohen_kappa(CM) == pytest.approx(0.5112782, abs=1e-6)


def test_linear_weighted_kappa_by_hand():
    # weights |i-j|/2. Observed: 0.5*(4+3+2+2) + 1*(1+1) = 7.5.
    # Expected r_i c_j / 40: 0.5*(5.25+4.55+3.9+4.2) + 1*(4.5+4.2) = 8.95 + 8.7 = 17.65.
    # kappa_w = 1 - 7.5 / 17.65
    assert cohen_kappa(CM, "linear") == pytest.approx(1 - 7.5 / 17.65, abs=1e-12)
    assert cohen_kappa(CM, "linear") == pytest.approx(0.5750708, abs=1e-6)


def test_weighted_kappa_punishes_far_misses_more():
    near = np.array([[5, 5, 0], [0, 10, 0], [0, 0, 10]])  # High read as Medium
    far = np.array([[5, 0, 5], [0, 10, 0], [0, 0, 10]])  # High read as Low
    assert cohen_kappa(near) == pytest.approx(cohen_kappa(far))  # plain kappa: same
    assert cohen_kappa(near, "linear") > cohen_kappa(far, "linear")


def test_two_class_kappa_and_weighted_equal():
    cm = np.array([[20, 5], [10, 15]])  # p_o 0.7, p_e (25*30 + 25*20) / 2500 = 0.5
    assert cohen_kappa(cm) == pytest.approx(0.4)
    assert cohen_kappa(cm, "linear") == pytest.approx(0.4)


def test_kappa_edges():
    assert cohen_kappa(np.eye(3) * 4) == pytest.approx(1.0)
    assert cohen_kappa(np.array([[0, 5], [5, 0]])) == pytest.approx(-1.0)  # always wrong
    assert math.isnan(cohen_kappa(np.zeros((3, 3))))
    one_class = np.zeros((3, 3))
    one_class[0, 0] = 7  # both raters always say High: chance agreement 1, kappa undefined
    assert math.isnan(cohen_kappa(one_class))
    with pytest.raises(ValueError, match="weights"):
        cohen_kappa(CM, "quadratic-ish")
    with pytest.raises(ValueError, match="square"):
        cohen_kappa(np.zeros((2, 3)))


def test_kappa_of_a_stack_is_the_kappa_of_each_matrix():
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 9, size=(4, 5, 3, 3))
    stack[0, 0] = 0  # an empty matrix in the stack: NaN there only
    got = cohen_kappa(stack, "linear")
    assert got.shape == (4, 5)
    for i, j in itertools.product(range(4), range(5)):
        want = cohen_kappa(stack[i, j], "linear")
        assert (math.isnan(want) and math.isnan(got[i, j])) or got[i, j] == pytest.approx(want)
    assert math.isnan(got[0, 0]) and np.isfinite(got[1:]).all()


def test_binary_kappa_by_hand():
    # truth: 25 True then 25 False; pred: 20 of the True and 10 of the False said True
    pred = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15, bool)
    truth = np.array([1] * 25 + [0] * 25, bool)
    assert binary_confusion(20, 30, 25, 50).tolist() == [[20, 5], [10, 15]]
    assert binary_kappa(pred, truth) == pytest.approx(0.4)  # the 2x2 matrix above
    assert math.isnan(binary_kappa(np.ones(4, bool), np.ones(4, bool)))  # one class each
    assert math.isnan(binary_kappa(np.zeros(0, bool), np.zeros(0, bool)))
    with pytest.raises(ValueError, match="truths"):
        binary_kappa(np.ones(3, bool), np.ones(4, bool))


def test_binary_kappa_is_the_textbook_formula():
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        pred, truth = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        po = (pred == truth).mean()
        pe = pred.mean() * truth.mean() + (1 - pred.mean()) * (1 - truth.mean())
        got = binary_kappa(pred, truth)
        if pe >= 1.0:
            assert math.isnan(got)
        else:
            assert got == pytest.approx((po - pe) / (1 - pe), abs=1e-12)


# ---------------------------------------------------------------------------- folds
def _users_and_labels(seed=0, n_users=37):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, n_users)  # users give 1 to 8 rows
    users = np.repeat(rng.permutation(1000)[:n_users], sizes)  # ids need not be 0..n-1
    y = rng.integers(0, 3, len(users))
    return users, y


def test_group_folds_keep_each_user_in_one_fold_and_every_row_in_one():
    users, y = _users_and_labels()
    folds = group_folds(users, y, 5, seed=3)
    assert folds.shape == users.shape and folds.dtype.kind == "i"
    assert set(folds.tolist()) == set(range(5))  # every row in exactly one of the 5 folds
    for u in np.unique(users):
        assert len(set(folds[users == u].tolist())) == 1, u
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 8  # balanced up to one user (at most 8 rows)


def test_group_folds_are_deterministic_per_seed():
    users, y = _users_and_labels()
    a, b = group_folds(users, y, 4, seed=7), group_folds(users, y, 4, seed=7)
    assert np.array_equal(a, b)
    assert any(not np.array_equal(a, group_folds(users, y, 4, seed=s)) for s in range(8, 12))


def test_group_folds_by_hand():
    # four users of two rows (one of each class), two folds: two whole users per fold
    folds = group_folds([0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 0, 1, 0, 1, 0, 1], 2)
    assert np.bincount(folds).tolist() == [4, 4]
    assert (folds[::2] == folds[1::2]).all()
    # one user per row: the rows are dealt over the folds like single users
    single = group_folds(np.arange(10), np.zeros(10, int), 5)
    assert np.bincount(single).tolist() == [2, 2, 2, 2, 2]


def test_group_folds_checks_its_input():
    with pytest.raises(ValueError, match="labels"):
        group_folds([0, 1, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="k must be"):
        group_folds([0, 1], [0, 1], 0)


# ---------------------------------------------------------------------------- cross-fitting
def test_cross_fit_predicts_each_row_from_the_other_folds_only():
    folds = np.array([0, 1, 2, 0, 1, 2])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    seen = []

    def fit_predict(train, test):
        assert not (train & test).any() and (train | test).all()
        seen.append(np.flatnonzero(test).tolist())
        return np.full(test.sum(), y[train].sum())

    oof = cross_fit(folds, fit_predict)
    assert seen == [[0, 3], [1, 4], [2, 5]]  # folds in increasing order
    # row 0 (fold 0): sum of rows 1, 2, 4, 5 = 2 + 3 + 5 + 6 = 16
    assert oof.tolist() == [16.0, 14.0, 12.0, 16.0, 14.0, 12.0]


def test_cross_fit_keeps_extra_axes_and_leaves_skipped_folds_nan():
    folds = np.array([0, 1, 0, 1])
    oof = cross_fit(folds, lambda tr, te: None if te[0] else np.ones((te.sum(), 2, 3)))
    assert oof.shape == (4, 2, 3)
    assert np.isnan(oof[[0, 2]]).all() and (oof[[1, 3]] == 1.0).all()
    assert np.isnan(cross_fit(folds, lambda tr, te: None)).all()


# ---------------------------------------------------------------------------- bootstrap
def test_bootstrap_indices_are_seeded_draws_with_replacement():
    idx = bootstrap_indices(5, 1000, seed=4)
    assert idx.shape == (1000, 5) and idx.min() == 0 and idx.max() == 4
    assert np.array_equal(idx, bootstrap_indices(5, 1000, seed=4))
    assert not np.array_equal(idx, bootstrap_indices(5, 1000, seed=5))
    # with replacement: some resample repeats a unit (P(no repeat) = 5!/5^5 = 0.0384 per row)
    assert (np.sort(idx, axis=1)[:, 1:] == np.sort(idx, axis=1)[:, :-1]).any(axis=1).mean() > 0.9
    with pytest.raises(ValueError):
        bootstrap_indices(0, 10)


def test_percentile_interval_by_hand():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    # level 0.5: the 25% and 75% quantiles; linear: positions 0.75 and 2.25
    assert percentile_interval(x, 0.5) == (0.75, 2.25)
    # nearest rank: the sample at or below 0.75 (0.0), at or above 2.25 (3.0)
    assert percentile_interval(x, 0.5, nearest_rank=True) == (0.0, 3.0)
    assert percentile_interval(np.array([1.0, 2.0, np.inf]), 0.5, nearest_rank=True)[1] == np.inf
    with pytest.raises(ValueError, match="level"):
        percentile_interval(x, 1.0)


def test_weighted_auc_counts_a_row_as_often_as_its_weight():
    from llmhni_local.eval.stats import auc, weighted_auc

    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, size=40).astype(float)  # many ties
    y = rng.random(40) < 0.4
    w = rng.integers(0, 4, size=(5, 40)).astype(float)
    got = weighted_auc(s, y, w)
    for b in range(5):
        rows = np.repeat(np.arange(40), w[b].astype(int))
        assert got[b] == pytest.approx(auc(s[rows], y[rows]))
    assert weighted_auc(s, y, np.ones((1, 40)))[0] == pytest.approx(auc(s, y))
    assert np.isnan(weighted_auc(s, y, (~y).astype(float)[None]))[0]  # no positive weight


def test_grouped_auc_interval_holds_the_estimate_and_widens_for_clustered_users():
    from llmhni_local.eval.stats import auc, grouped_auc_interval

    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(40), 10)
    y = rng.random(400) < 0.5
    # how well the score separates the classes differs by user: the users, not the pairs, are
    # the independent draws
    s = y * np.repeat(rng.normal(0.3, 1.0, size=40), 10) + 0.3 * rng.normal(size=400)
    lo, hi = grouped_auc_interval(s, y, users, seed=0)
    assert lo < auc(s, y) < hi
    lo_pairs, hi_pairs = grouped_auc_interval(s, y, np.arange(400), seed=0)
    assert hi - lo > 1.5 * (hi_pairs - lo_pairs)
    assert grouped_auc_interval(s, y, users, seed=0) == (lo, hi)  # seeded
