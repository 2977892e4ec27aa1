r"""Ranking metrics as pure functions of top-K lists and ground truth.

For a user with ground-truth set :math:`T` and ranked list :math:`r_1, r_2, \dots`:

.. math::
    \mathrm{Recall@K} = \frac{|\{r_1..r_K\} \cap T|}{|T|}, \qquad
    \mathrm{NDCG@K} = \frac{\sum_{k=1}^{K} [r_k \in T] / \log_2(k+1)}
                           {\sum_{k=1}^{\min(K, |T|)} 1 / \log_2(k+1)}

Every K is computed in one cumulative pass over the longest list. Users with an empty
ground-truth set are excluded from the means (docs/METHOD.md).
"""

from __future__ import annotations

import numpy as np


def ranking_metrics(hits: np.ndarray, n_truth: np.ndarray,
                    ks: tuple[int, ...] = (10, 20)) -> dict[str, np.ndarray]:
    """Per-user Recall@K and NDCG@K.

    Args:
        hits: ``(B, K_max)`` bool, ``hits[b, k]`` is True when the item ranked ``k`` (0-based)
            for user ``b`` is in the user's ground truth.
        n_truth: ``(B,)`` size of each user's ground truth (> 0).
        ks: cut-offs, each ``<= K_max``.

    Returns:
        ``{"recall@K": (B,), "ndcg@K": (B,)}`` for every K.

    >>> m = ranking_metrics(np.array([[True, False, True]]), np.array([2]), ks=(1, 3))
    >>> round(float(m["recall@3"][0]), 4), round(float(m["ndcg@1"][0]), 4)
    (1.0, 1.0)
    """
    hits = np.asarray(hits, dtype=np.float64)
    n_truth = np.asarray(n_truth, dtype=np.float64)
    k_max = hits.shape[1]
    if max(ks) > k_max:
        raise ValueError(f"cut-off {max(ks)} exceeds the {k_max} ranked items given")
    discounts = 1.0 / np.log2(np.arange(2, k_max + 2))
    cum_hits = np.cumsum(hits, axis=1)
    cum_dcg = np.cumsum(hits * discounts, axis=1)
    cum_idcg = np.cumsum(discounts)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"recall@{k}"] = cum_hits[:, k - 1] / n_truth
        ideal = cum_idcg[np.minimum(k, n_truth).astype(int) - 1]
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / ideal
    return out


def precision_recall_f1(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a boolean verdict against boolean ground truth."""
    predicted = np.asarray(predicted, bool)
    truth = np.asarray(truth, bool)
    tp = float((predicted & truth).sum())
    n_pred, n_true = float(predicted.sum()), float(truth.sum())
    p = tp / n_pred if n_pred else float("nan")
    r = tp / n_true if n_true else float("nan")
    f1 = 2 * p * r / (p + r) if n_pred and n_true and (p + r) > 0 else 0.0 if n_pred and n_true else float("nan")
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "predicted": n_pred, "actual": n_true}
