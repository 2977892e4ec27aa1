"""Agreement between a rater's labels and audited labels: pure functions of label lists.

Labels are ordered ``High > Medium > Low`` (``LABELS``); a confusion matrix has the audited
(true) label as its row and the rater's label as its column, in that order.

* accuracy = trace(C) / n.
* Cohen's kappa and the linear-weighted kappa (disagreement weights ``|i - j| / (K - 1)``: High
  vs Low costs twice High vs Medium) of the matrix: :func:`llmhni_local.eval.stats.cohen_kappa`,
  where the formulas are.
* Wilson 95% interval of a proportion ``k / n`` (better than the normal interval near 0 or 1
  and for small n): ``(p + z^2/2n ± z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``.
* Majority baseline: always answer the most frequent label of a reference set; its kappa is 0
  by construction, its accuracy is the share of that label.

A kappa is NaN when it is undefined (no pairs, or every pair in one class for both raters, so
that chance agreement is 1). A rater's failed answers (``None``) are not given a label: they
are counted apart and left out of the matrix (``agreement`` reports both).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import numpy as np

from llmhni_local.engine.api import LABELS
from llmhni_local.eval.stats import cohen_kappa

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def confusion_matrix(truth: Sequence[str], pred: Sequence[str],
                     labels: Sequence[str] = LABELS) -> np.ndarray:
    """``(K, K)`` int counts, rows = ``truth`` (audit), columns = ``pred`` (rater).

    >>> confusion_matrix(["High", "Low"], ["High", "Medium"]).tolist()
    [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    """
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} true labels but {len(pred)} predicted ones")
    index = {lab: k for k, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth, pred):
        if t not in index or p not in index:
            raise ValueError(f"label {t if t not in index else p!r} is not one of {list(labels)}")
        cm[index[t], index[p]] += 1
    return cm


def accuracy(cm: np.ndarray) -> float:
    """Share of pairs on the diagonal (NaN for an empty matrix)."""
    n = cm.sum()
    return float(np.trace(cm) / n) if n else math.nan


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / n`` (NaNs for ``n = 0``).

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def majority_label(labels: Sequence[str], order: Sequence[str] = LABELS) -> str | None:
    """The most frequent label (ties broken by ``order``); ``None`` for no labels."""
    counts = Counter(labels)
    if not counts:
        return None
    return max(order, key=lambda lab: (counts.get(lab, 0), -list(order).index(lab)))


def majority_baseline(truth: Sequence[str], reference: Sequence[str] | None = None,
                      labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Always answer the majority label of ``reference`` (default: of ``truth`` itself).

    Returns the label, its accuracy on ``truth`` with the Wilson interval, and kappa
    (0.0 by construction where defined, NaN when ``truth`` is all one class).
    """
    label = majority_label(reference if reference is not None else truth, labels)
    if label is None or not len(truth):
        return {"label": label, "accuracy": math.nan, "wilson95": [math.nan, math.nan],
                "kappa": math.nan, "weighted_kappa": math.nan}
    cm = confusion_matrix(truth, [label] * len(truth), labels)
    hits = int(np.trace(cm))
    return {"label": label, "accuracy": accuracy(cm),
            "wilson95": list(wilson_interval(hits, len(truth))),
            "kappa": cohen_kappa(cm), "weighted_kappa": cohen_kappa(cm, "linear")}


def agreement(truth: Sequence[str], pred: Sequence[str | None],
              labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Every figure of one rater against the audit, on the pairs both have.

    Args:
        truth: audited labels.
        pred: the rater's labels, ``None`` where its answer was not a label (a failure).
        labels: the label set, in order (ordinal for the weighted kappa).

    Returns a dict: ``n`` (pairs), ``failed`` (answers that were not labels, left out of the
    matrix), ``n_labelled``, ``accuracy`` with ``wilson95``, ``kappa``, ``weighted_kappa``,
    ``confusion`` (rows audit, columns rater), ``accuracy_counting_failures`` (a failure
    counts as wrong) and the ``majority`` baseline on the same pairs.
    """
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} true labels but {len(pred)} predicted ones")
    keep = [k for k, p in enumerate(pred) if p is not None]
    t = [truth[k] for k in keep]
    p = [pred[k] for k in keep]
    cm = confusion_matrix(t, p, labels)
    hits = int(np.trace(cm))
    n = len(truth)
    return {
        "n": n,
        "failed": n - len(keep),
        "n_labelled": len(keep),
        "accuracy": accuracy(cm),
        "wilson95": list(wilson_interval(hits, len(keep))),
        "accuracy_counting_failures": hits / n if n else math.nan,
        "kappa": cohen_kappa(cm),
        "weighted_kappa": cohen_kappa(cm, "linear"),
        "confusion": cm.tolist(),
        "labels": list(labels),
        "majority": majority_baseline(t, labels=labels),
    }
