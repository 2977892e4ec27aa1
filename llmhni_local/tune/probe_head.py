"""The probe's head: multinomial logistic regression on standardised hidden states.

The loss is sklearn's: ``C * sum_i w_i CE_i + ||W||^2 / 2`` (class weights ``w``, no penalty on
the biases), minimised in float64 by scipy's L-BFGS-B on the whole set with the exact gradient
(numpy; a torch optimiser's per-step overhead was many times slower on this small problem). Features
are standardised with the training rows' mean and spread, kept with the weights so the head
applies to raw states.

Layer and ``C`` are chosen by k-fold cross-validation grouped by user (no user's pairs on both
sides of a fold, so the figures say how the head does on users it has not seen) and stratified
by label as far as whole users allow (``eval.stats.group_folds``); the criterion is the
class-weighted out-of-fold log-loss (smooth, so stable on a few hundred labels, where kappa
jumps with a handful of pairs).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from llmhni_local.audit.agreement import agreement
from llmhni_local.engine.api import LABELS
from llmhni_local.eval.stats import auc, cross_fit
from llmhni_local.weights.probe import Head


def balanced_weights(y: np.ndarray, k: int = len(LABELS)) -> np.ndarray:
    """Per-row weights ``n / (k n_class)``, so every class weighs the same in the loss.

    >>> balanced_weights(np.array([0, 0, 0, 1]), 2).round(3).tolist()
    [0.667, 0.667, 0.667, 2.0]
    """
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return (len(y) / (k * np.maximum(counts, 1)))[y]


def fit_head(x: np.ndarray, y: np.ndarray, c: float, weights: np.ndarray | None = None,
             max_iter: int = 500, init: Head | None = None) -> Head:
    """Fit the head on raw states ``x`` ``(n, hidden)`` and class indices ``y`` (scipy's
    L-BFGS-B on the exact loss and gradient; ``init``: a head to start from, e.g. the fit at
    the next smaller ``C`` on the same rows, which saves most of the iterations)."""
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)  # a constant feature stays constant (zero)
    z = (x - mean) / scale
    y = np.asarray(y, dtype=np.int64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    k, d = len(LABELS), x.shape[1]
    onehot = np.eye(k)[y]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        wt, b = theta[:k * d].reshape(k, d), theta[k * d:]
        logits = z @ wt.T + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        value = -c * float((w * logp[np.arange(len(y)), y]).sum()) + 0.5 * float((wt * wt).sum())
        resid = c * w[:, None] * (np.exp(logp) - onehot)  # d loss / d logits
        grad_w = resid.T @ z + wt
        return value, np.concatenate([grad_w.ravel(), resid.sum(axis=0)])

    theta0 = (np.concatenate([init.weight.ravel(), init.bias]) if init is not None
              else np.zeros(k * d + k))
    # One BLAS thread: these matmuls are small, and a threaded BLAS spin-waiting on a busy
    # 2-core machine made each fit ~30x slower (measured: 0.2 s vs 6 s at C = 1).
    with threadpool_limits(limits=1, user_api="blas"):
        res = minimize(loss, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "gtol": 1e-6})
    return Head(mean=mean, scale=scale, weight=res.x[:k * d].reshape(k, d).copy(),
                bias=res.x[k * d:].copy())


def noise_score(probs: np.ndarray) -> np.ndarray:
    """How noisy a pair looks to a head: ``P(Low) - P(High)``."""
    return probs[:, LABELS.index("Low")] - probs[:, LABELS.index("High")]


def figures(probs: np.ndarray, y: np.ndarray) -> dict:
    """Out-of-fold figures: class-weighted log-loss, kappa of the argmax, AUC of the noise
    score for Low against the other labels, and counts."""
    w = balanced_weights(y)
    ll = float(-(w * np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))).sum() / w.sum())
    pred = [LABELS[k] for k in probs.argmax(1)]
    truth = [LABELS[k] for k in y]
    agree = agreement(truth, pred)
    return {"log_loss": ll, "kappa": agree["kappa"], "weighted_kappa": agree["weighted_kappa"],
            "accuracy": agree["accuracy"],
            "auc_low": auc(noise_score(probs), y == LABELS.index("Low")), "n": int(len(y)),
            "pred_counts": {lab: pred.count(lab) for lab in LABELS}}


def grid_cv(states: np.ndarray, y: np.ndarray, folds: np.ndarray,
            cs: Sequence[float]) -> list[dict]:
    """Out-of-fold figures of every (layer, C): ``states`` is ``(n, layers, hidden)``, ``folds``
    the fold of each row (:func:`~llmhni_local.eval.stats.group_folds`: grouped by user); one
    row per pair of choices, with the out-of-fold probabilities under ``"probs"``."""
    order = sorted(cs)
    rows = []
    for j in range(states.shape[1]):
        def fit_predict(train: np.ndarray, test: np.ndarray, j=j) -> np.ndarray:
            head, probs = None, []
            for c in order:  # a warm start from the next smaller C
                head = fit_head(states[train, j], y[train], c, balanced_weights(y[train]),
                                init=head)
                probs.append(head.probs(states[test, j]))
            return np.stack(probs, axis=1)  # (test rows, C, label)

        oof = cross_fit(folds, fit_predict)
        rows += [{"layer_pos": j, "C": float(c), **figures(oof[:, order.index(c)], y),
                  "probs": oof[:, order.index(c)]} for c in cs]
    return rows
