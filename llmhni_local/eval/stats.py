"""The one place for the statistics: AUC, kappa, folds by user, cross-fitting, bootstrap.

Pure numpy (scipy for ranks); no model is fitted here. The callers fit their own models (the
probe's head, the verdict rules' logistic, the threshold rule's taus) inside the fold loop of
:func:`cross_fit`, on folds from :func:`group_folds`.

* AUC (Mann-Whitney): ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, ``R_pos`` the sum of
  the positives' ranks among all scores, tied scores sharing their mean rank (a tie counts 1/2).
* Cohen's kappa of a confusion matrix ``O`` (``n`` pairs, expected ``E = rows cols^T / n``):
  ``1 - sum(w O) / sum(w E)``, with disagreement weights ``w_ij = [i != j]`` (plain kappa, which
  is ``(p_o - p_e) / (1 - p_e)``) or ``|i - j| / (K - 1)`` (linear-weighted).
* Folds grouped by user: every row of a user in one fold, class counts balanced as far as
  whole users allow.
* Bootstrap over users: resample the ``n`` units with replacement, percentile interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np


# ---------------------------------------------------------------------------- AUC
def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    r"""Area under the ROC curve of ``scores`` for the rows where ``positive`` is true: the
    probability that a random positive outscores a random negative, a tie counting half.

    .. math::
        \mathrm{AUC} = \frac{R_+ - n_+ (n_+ + 1) / 2}{n_+ n_-}

    with :math:`R_+` the sum of the positives' ranks among all scores (ties get their mean
    rank). NaN when either class is absent.

    >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    >>> auc(np.array([1.0, 1.0, 2.0]), np.array([True, False, True]))  # a tie counts half
    0.75
    >>> auc(np.array([1.0, 2.0]), np.array([True, True]))
    nan
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape:
        raise ValueError(f"auc: {scores.shape} scores but {positive.shape} class flags")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`auc` with each row counted ``weights`` times, for every row of a ``(B, n)``
    weight matrix at once (a row weighted 2 counts as the row given twice; ties count half);
    ``(B,)`` AUCs, NaN where a class has no weight. One sort, then O(B n).

    >>> s, y = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    >>> weighted_auc(s, y, np.ones((1, 4))).tolist()
    [0.75]
    >>> weighted_auc(s, y, np.array([[1.0, 0, 1, 1]])).tolist()  # without the 0.4 negative
    [1.0]
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if not (scores.shape == positive.shape == weights.shape[1:]):
        raise ValueError(f"weighted_auc: {scores.shape} scores, {positive.shape} class flags, "
                         f"{weights.shape} weights")
    order = np.argsort(scores, kind="stable")
    sorted_scores, pos = scores[order], positive[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # tie blocks
    neg_w = np.add.reduceat(w * ~pos, starts, axis=1)
    pos_w = np.add.reduceat(w * pos, starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w  # negative weight strictly below each block
    total = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (pos_w * (below + 0.5 * neg_w)).sum(axis=1) / total, np.nan)


def grouped_auc_interval(scores: np.ndarray, positive: np.ndarray, groups: np.ndarray, *,
                         n_boot: int = 1000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of :func:`auc` that resamples whole ``groups`` (users),
    since one user's pairs are not independent draws: each resample draws as many groups as
    there are, with replacement, and weights each row by how often its group was drawn.

    >>> s = np.array([0.1, 0.2, 0.8, 0.9]); y = np.array([0, 0, 1, 1])
    >>> grouped_auc_interval(s, y, np.array([0, 1, 0, 1]))  # separated in every resample
    (1.0, 1.0)
    """
    names, group_of = np.unique(np.asarray(groups), return_inverse=True)
    if not len(names):
        return math.nan, math.nan
    draws = bootstrap_indices(len(names), n_boot, seed)
    counts = np.zeros((n_boot, len(names)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    aucs = weighted_auc(scores, positive, counts[:, group_of])
    aucs = aucs[np.isfinite(aucs)]
    if not len(aucs):
        return math.nan, math.nan
    return percentile_interval(aucs, level)


# ---------------------------------------------------------------------------- kappa
def cohen_kappa(cm: np.ndarray, weights: Literal["linear"] | None = None) -> float | np.ndarray:
    r"""Cohen's kappa of a confusion matrix (rows: one rater, columns: the other), or of each
    matrix of a stack ``(..., K, K)``; ``weights="linear"`` for the linear-weighted kappa.

    .. math::
        \kappa_w = 1 - \frac{\sum_{ij} w_{ij} O_{ij}}{\sum_{ij} w_{ij} E_{ij}}, \qquad
        E_{ij} = \frac{O_{i\cdot} O_{\cdot j}}{n}

    with ``w_ij = [i != j]`` (plain kappa, equal to ``(p_o - p_e) / (1 - p_e)``) or
    ``|i - j| / (K - 1)`` (linear). For two classes both are the same. NaN where undefined: no
    pairs, or chance agreement perfect (``sum(w E) = 0``).

    >>> round(cohen_kappa(np.array([[20, 5], [10, 15]])), 4)
    0.4
    >>> cm = np.array([[10, 5, 0], [0, 10, 5], [0, 0, 10]])
    >>> round(cohen_kappa(cm, "linear"), 4)  # 1 - 5 / 17.5
    0.7143
    >>> cohen_kappa(np.array([[[4, 0], [0, 4]], [[4, 0], [0, 0]]])).tolist()  # a stack
    [1.0, nan]
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"a confusion matrix must be square, got {cm.shape}")
    k = cm.shape[-1]
    if weights is None:
        w = 1.0 - np.eye(k)
    elif weights == "linear":
        idx = np.arange(k)
        w = np.abs(idx[:, None] - idx[None, :]) / max(k - 1, 1)
    else:
        raise ValueError(f"weights must be None or 'linear', got {weights!r}")
    n = cm.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = cm.sum(-1)[..., :, None] * cm.sum(-2)[..., None, :] / n[..., None, None]
        observed_w = (w * cm).sum(axis=(-2, -1))
        expected_w = (w * expected).sum(axis=(-2, -1))
        kappa = 1.0 - observed_w / expected_w
    # no pairs (n = 0) or perfect chance agreement: undefined
    kappa = np.where((n > 0) & (expected_w != 0.0), kappa, np.nan)
    return float(kappa) if kappa.ndim == 0 else kappa


def binary_kappa(pred: np.ndarray, truth: np.ndarray) -> float:
    """Cohen's kappa of two boolean vectors: :func:`cohen_kappa` of their 2x2 matrix (rows
    ``truth``, columns ``pred``, True first). NaN where undefined.

    >>> pred = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15, bool)
    >>> round(binary_kappa(pred, np.arange(50) < 25), 4)
    0.4
    """
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"binary_kappa: {pred.shape} predictions but {truth.shape} truths")
    return cohen_kappa(binary_confusion(int((pred & truth).sum()), int(pred.sum()),
                                        int(truth.sum()), len(pred)))


def binary_confusion(both: np.ndarray | int, pred_pos: np.ndarray | int,
                     true_pos: np.ndarray | int, n: np.ndarray | int) -> np.ndarray:
    """The 2x2 confusion matrix ``[[tp, fn], [fp, tn]]`` (rows: truth True/False, columns:
    prediction True/False) from the counts of rows positive in both, predicted positive,
    truly positive and all rows; arrays of counts give a stack ``(..., 2, 2)``.

    >>> binary_confusion(20, 30, 25, 50).tolist()
    [[20.0, 5.0], [10.0, 15.0]]
    """
    both, pred_pos, true_pos, n = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                                        for v in (both, pred_pos, true_pos, n)))
    out = np.empty((*both.shape, 2, 2))
    out[..., 0, 0] = both
    out[..., 0, 1] = true_pos - both
    out[..., 1, 0] = pred_pos - both
    out[..., 1, 1] = n - true_pos - pred_pos + both
    return out


# ---------------------------------------------------------------------------- folds
def group_folds(groups: Sequence[int] | np.ndarray, y: Sequence[int] | np.ndarray, k: int,
                seed: int = 0) -> np.ndarray:
    """Fold number (``0..k-1``) of each row, grouped: every row of a group (a user) in one fold,
    folds balanced in size and per-class counts as far as whole groups allow. THE fold function
    wherever one user gives several rows (a user on both sides of a fold would let a model
    score a row by what it learned of its user).

    Groups are shuffled by ``seed``, then placed largest first, each into the fold that stays
    furthest below its share of every class after taking it (ties: the emptier fold).

    >>> folds = group_folds([0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 0, 1, 0, 1, 0, 1], 2)
    >>> np.bincount(folds).tolist(), bool((folds[::2] == folds[1::2]).all())  # sizes, whole users
    ([4, 4], True)
    """
    if k < 1:
        raise ValueError(f"group_folds: k must be >= 1, got {k}")
    groups = np.asarray(groups)
    y = np.asarray(y, dtype=np.int64)
    if groups.shape != y.shape:
        raise ValueError(f"group_folds: {groups.shape} groups but {y.shape} labels")
    n_class = int(y.max()) + 1 if len(y) else 1
    uniq, inv = np.unique(groups, return_inverse=True)
    per_group = np.zeros((len(uniq), n_class))
    np.add.at(per_group, (inv, y), 1.0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-per_group[order].sum(1), kind="stable")]
    fill = np.zeros((k, n_class))
    target = per_group.sum(0) / k
    fold_of = np.zeros(len(uniq), dtype=np.int64)
    for g in order:
        # the fold that stays furthest below its share after taking this group
        cost = (((fill + per_group[g]) - target) / np.maximum(target, 1.0)).clip(min=0).sum(1)
        cost += 1e-6 * fill.sum(1)  # ties: the emptier fold
        f = int(np.argmin(cost))
        fold_of[g] = f
        fill[f] += per_group[g]
    return fold_of[inv]


def cross_fit(folds: np.ndarray,
              fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray | None]) -> np.ndarray:
    """Out-of-fold predictions: for each fold ``f`` (in increasing order)
    ``fit_predict(train, test)`` gets two boolean row masks (``train``: rows not in ``f``,
    ``test``: rows in ``f``), fits whatever it fits on the training rows and returns its
    predictions for the test rows (first axis: the test rows, in order), or ``None`` to leave
    them NaN (e.g. a training side with one class fits nothing). Returns a float array
    ``(n, ...)``.

    >>> folds = np.array([0, 1, 0, 1])
    >>> y = np.array([1.0, 2.0, 3.0, 4.0])
    >>> cross_fit(folds, lambda tr, te: np.full(te.sum(), y[tr].mean())).tolist()  # the rest's mean
    [3.0, 2.0, 3.0, 2.0]
    """
    folds = np.asarray(folds)
    out: np.ndarray | None = None
    for f in np.unique(folds):
        test = folds == f
        pred = fit_predict(~test, test)
        if pred is None:
            continue
        pred = np.asarray(pred, dtype=np.float64)
        if out is None:
            out = np.full((len(folds), *pred.shape[1:]), np.nan)
        out[test] = pred
    return out if out is not None else np.full(len(folds), np.nan)


# ---------------------------------------------------------------------------- bootstrap
def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` row indices, each row ``n`` draws with replacement from ``0..n-1`` (one
    bootstrap resample of the units, e.g. test users, per row; seeded).

    >>> idx = bootstrap_indices(3, 4, seed=0)
    >>> idx.shape, bool(((idx >= 0) & (idx < 3)).all())
    ((4, 3), True)
    """
    if n <= 0 or n_boot <= 0:
        raise ValueError(f"bootstrap_indices: n ({n}) and n_boot ({n_boot}) must be > 0")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(samples: np.ndarray, level: float = 0.95, *,
                        nearest_rank: bool = False) -> tuple[float, float]:
    """The percentile interval of bootstrap ``samples``: their ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles, linearly interpolated, or with ``nearest_rank`` the sample at
    or below the lower one and at or above the upper one (never an average of two samples, so
    an end may be ``inf`` without turning into NaN).

    >>> percentile_interval(np.arange(101.0), 0.5)
    (25.0, 75.0)
    >>> percentile_interval(np.array([0.0, 1.0, np.inf]), 0.5, nearest_rank=True)
    (0.0, inf)
    """
    if not 0 < level < 1:
        raise ValueError(f"percentile_interval: level must be in (0, 1), got {level}")
    samples = np.asarray(samples, dtype=np.float64)
    tail = (1 - level) / 2
    if nearest_rank:
        return (float(np.quantile(samples, tail, method="lower")),
                float(np.quantile(samples, 1 - tail, method="higher")))
    lo, hi = np.quantile(samples, [tail, 1 - tail])
    return float(lo), float(hi)
