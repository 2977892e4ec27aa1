"""Agreement figures against values computed by hand (worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmhni_local.audit.agreement import (
    accuracy,
    agreement,
    confusion_matrix,
    majority_baseline,
    majority_label,
    wilson_interval,
)

# Rows audit (High, Medium, Low), columns rater. n = 40, diagonal 27.
CM = np.array([[10, 4, 1],
               [3, 8, 2],
               [1, 2, 9]])


def _pairs_from(cm: np.ndarray) -> tuple[list[str], list[str]]:
    names = ["High", "Medium", "Low"]
    truth, pred = [], []
    for (t, p), count in np.ndenumerate(cm):
        truth += [names[t]] * int(count)
        pred += [names[p]] * int(count)
    return truth, pred


def test_confusion_matrix_rows_are_audit_columns_rater() -> None:
    truth, pred = _pairs_from(CM)
    assert confusion_matrix(truth, pred).tolist() == CM.tolist()
    assert confusion_matrix(["Low"], ["High"]).tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="not one of"):
        confusion_matrix(["High"], ["Maybe"])


def test_accuracy_by_hand() -> None:
    assert accuracy(CM) == pytest.approx(27 / 40)
    # the kappas of this matrix are checked by hand in tests/eval/test_stats.py


def test_wilson_interval_by_hand() -> None:
    # p = 27/40, z = 1.96: centre (p + z^2/80) / (1 + z^2/40) = 0.659666,
    # half-width z sqrt(p(1-p)/40 + z^2/6400) / (1 + z^2/40) = 0.139489
    lo, hi = wilson_interval(27, 40)
    assert lo == pytest.approx(0.5201775, abs=1e-6)
    assert hi == pytest.approx(0.7991550, abs=1e-6)
    lo, hi = wilson_interval(0, 10)  # upper bound z^2 / (n + z^2)
    assert lo == 0.0 and hi == pytest.approx(1.959964 ** 2 / (10 + 1.959964 ** 2), abs=1e-6)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / (10 + 1.959964 ** 2), abs=1e-6)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_majority_baseline() -> None:
    truth = ["High"] * 5 + ["Medium"] * 3 + ["Low"] * 2
    base = majority_baseline(truth)
    assert base["label"] == "High" and base["accuracy"] == pytest.approx(0.5)
    assert base["kappa"] == pytest.approx(0.0) and base["weighted_kappa"] == pytest.approx(0.0)
    # the majority of a reference set (e.g. the training labels) applied to other pairs
    other = majority_baseline(truth, reference=["Low", "Low", "High"])
    assert other["label"] == "Low" and other["accuracy"] == pytest.approx(0.2)
    assert majority_label(["Medium", "Low"]) == "Medium"  # tie: label order decides
    assert majority_label([]) is None


def test_agreement_counts_failures_apart() -> None:
    truth, pred = _pairs_from(CM)
    pred_failed = pred + [None, None]
    truth_failed = truth + ["High", "Low"]
    a = agreement(truth_failed, pred_failed)
    assert a["n"] == 42 and a["failed"] == 2 and a["n_labelled"] == 40
    assert a["confusion"] == CM.tolist()
    assert a["accuracy"] == pytest.approx(27 / 40)
    assert a["accuracy_counting_failures"] == pytest.approx(27 / 42)
    assert a["kappa"] == pytest.approx(0.5112782, abs=1e-6)
    assert a["wilson95"][0] == pytest.approx(0.5201775, abs=1e-6)
    assert a["majority"]["label"] == "High" and a["majority"]["accuracy"] == pytest.approx(15 / 40)
