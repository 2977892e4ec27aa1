"""Verdict rules beyond the argmax: calibration, thresholds and a stacked model (pure functions).

The design is in docs/DESIGN.md ("Verdict rules"). In short:

* **Batch calibration** (``calibration = "batch"``): each label probability of a view is
  divided by its mean over the run's candidates of that view, then the three are renormalised
  (the batch form of contextual calibration: a label the model favours on every prompt loses
  that prior). Content-free calibration (the model's probabilities for an empty or "N/A"
  input) would need extra LLM calls per template and is not offered.
* **Score of a view**: ``log P(High) - log(P(Medium) + P(Low))``, the log-odds of High against
  not-High after calibration, computed from the stored probabilities (not ``1 - P(High)``, which
  loses every digit when the model is sure). A verdict is hard iff both views say High, so
  High against the rest is the odds that matter; the score keeps precision at saturation.
* **Threshold** (``rule = "threshold"``): a view says High when its score is at least tau. The
  two taus are chosen jointly on the run's audited pairs for the best verdict kappa (audited
  label High -> hard, else noisy), or put at the quantile that gives ``target_share`` of a
  view's candidates High. With taus from audits two kappas are reported: the in-sample one
  (taus chosen and judged on the same pairs: optimistic) and a cross-fitted one (taus chosen
  on k-1 folds grouped by user, judged on the held-out fold, pooled: the honest estimate).
* **Stacked** (``rule = "stacked"``): class-balanced, L2-regularised logistic models (Newton's
  method, numpy) of the audited verdict on the rater's probabilities of both views (``llm``),
  on non-LLM features (the recommender's score, log item popularity, log user activity, the
  candidate kind: ``non_llm``) and on both (``stacked``), cross-validated on the same folds,
  grouped by user (a user's pairs never on both sides of a fold).
  The rule uses the one with the best cross-validated AUC (ties to the simpler one:
  ``non_llm``, ``llm``, ``stacked``), refitted on every usable audited pair, so it is at
  least as good in cross-validation as each of its parts; all three figures are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmhni_local.core.errors import ConfigError
from llmhni_local.eval.stats import (
    auc,
    binary_confusion,
    binary_kappa,
    cohen_kappa,
    cross_fit,
    group_folds,
)

#: Smallest probability a log is taken of (stored probabilities can be exactly 0).
EPS = 1e-12
#: Most thresholds tried per view in the joint tau search (quantiles beyond that).
MAX_GRID = 256


@dataclass(frozen=True)
class VerdictSettings:
    """How a candidate pair's two views become a verdict (the ``[verdicts]`` table).

    Args:
        rule: ``argmax`` (hard iff both views' labels are High), ``threshold`` (hard iff both
            views' calibrated High score clears its tau) or ``stacked`` (the logistic model on
            LLM features, non-LLM features or both with the best cross-validated AUC on the
            audited pairs; needs ``min_audits`` audited candidates of both verdicts).
            (default: ``"argmax"``)
        calibration: ``none`` or ``batch`` (divide each label probability by its mean over the
            run's candidates of that view and renormalise). With ``argmax``, ``batch`` takes the
            argmax of the calibrated probabilities. Content-free calibration is not offered (it
            needs extra LLM calls). (default: ``"none"``)
        tau_source: where the threshold rule's taus come from: ``audits`` (the pair of taus
            with the best verdict kappa on the run's audited candidates) or ``share``
            (``target_share`` of each view's candidates say High). (default: ``"audits"``)
        target_share: share of each view's candidates that say High with
            ``tau_source = "share"``. (default: ``0.8``)
        min_audits: fewest usable audited pairs (rated candidates that trained no adapter) to
            fit taus or the stacked model from. (default: ``50``)
        folds: cross-validation folds (grouped by user) of the stacked rule's candidate
            models (each verdict class needs at least this many audited pairs) and of the
            threshold rule's cross-fitted kappa. (default: ``5``)
        l2: L2 penalty of the stacked logistic model on standardised features. (default: ``1.0``)
        seed: seed of the cross-validation and cross-fitting folds. (default: ``0``)
        constant_share: a view one label of which takes at least this share of its answered
            judgments is named constant (the rate stage warns, ``verdicts.json`` records it,
            the report and results table mark the rater: :func:`constant_views`). In (0.5, 1].
            (default: ``0.95``)
        file: a verdicts file made elsewhere (CSV, TSV, Parquet or JSON Lines of ``user``,
            ``item``, ``verdict`` in the data's raw ids; docs/IMPORTING.md). When set, the
            verdicts stage imports it instead of deciding, the rating stages do nothing, and
            the settings above are not read. (default: ``None``)
        source: where the file's verdicts were made (a rater, a lab), named in verdicts.json
            and the report; required with ``file``. (default: ``None``)
        keep_held_out: with ``file``, or with judgments imported from a file (``rate.file``,
            ``verdicts decide --source``), add the hard pairs that are validation or test
            pairs too (they are counted either way); by default they are not added, since
            they would put held-out answers into training. (default: ``False``)
        skip_unknown: with ``file``, drop rows whose user or item id is not in the data
            (counted by reason) instead of refusing the file. (default: ``False``)
    """

    rule: Literal["argmax", "threshold", "stacked"] = "argmax"
    calibration: Literal["none", "batch"] = "none"
    tau_source: Literal["audits", "share"] = "audits"
    target_share: float = 0.8
    min_audits: int = 50
    folds: int = 5
    l2: float = 1.0
    seed: int = 0
    constant_share: float = 0.95
    file: str | None = None
    source: str | None = None
    keep_held_out: bool = False
    skip_unknown: bool = False

    def __post_init__(self) -> None:
        if self.file is not None:
            if not Path(self.file).is_file():
                raise ConfigError(f"verdicts.file: {self.file}: no such file")
            if not (self.source or "").strip():
                raise ConfigError(f"verdicts.source must say where the verdicts of "
                                  f"verdicts.file ({self.file}) were made (a rater, a lab)")
        if not 0.0 < self.target_share <= 1.0:
            raise ConfigError(f"verdicts.target_share must be in (0, 1], got {self.target_share}")
        if self.min_audits < 2:
            raise ConfigError(f"verdicts.min_audits must be >= 2, got {self.min_audits}")
        if self.folds < 2:
            raise ConfigError(f"verdicts.folds must be >= 2, got {self.folds}")
        if self.l2 <= 0:
            raise ConfigError(f"verdicts.l2 must be > 0, got {self.l2}")
        if not 0.5 < self.constant_share <= 1.0:
            raise ConfigError(f"verdicts.constant_share must be in (0.5, 1], got "
                              f"{self.constant_share}")


# ---------------------------------------------------------------------------- calibration
def batch_calibrate(probs: np.ndarray, fit: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Divide each column of ``probs`` (rows: High, Medium, Low) by its mean over the rows in
    ``fit`` (all rows by default) and renormalise each row; returns (calibrated, means)."""
    probs = np.asarray(probs, dtype=np.float64)
    rows = probs if fit is None else probs[np.asarray(fit, bool)]
    if len(rows) == 0:
        raise ValueError("batch calibration needs at least one row of probabilities")
    means = np.maximum(rows.mean(axis=0), EPS)
    out = probs / means
    return out / out.sum(axis=1, keepdims=True), means


def high_score(probs: np.ndarray) -> np.ndarray:
    """``log P(High) - log(P(Medium) + P(Low))`` per row of ``(High, Medium, Low)`` probs."""
    probs = np.asarray(probs, dtype=np.float64)
    return np.log(np.maximum(probs[:, 0], EPS)) - np.log(np.maximum(probs[:, 1] + probs[:, 2], EPS))


def log_ratios(probs: np.ndarray) -> np.ndarray:
    """``(log P(High)/P(Low), log P(Medium)/P(Low))`` per row: the whole distribution in two
    coordinates; batch calibration only shifts them by constants."""
    logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), EPS))
    return np.stack([logp[:, 0] - logp[:, 2], logp[:, 1] - logp[:, 2]], axis=1)


# ---------------------------------------------------------------------------- constant raters
def constant_views(label_counts_per_view: dict[str, dict[Any, int]], share: float
                   ) -> dict[str, dict[str, Any]]:
    """The views in which one label takes at least ``share`` of the answered judgments:
    ``{view: {"label": ..., "share": ..., "answered": n}}``.

    ``label_counts_per_view`` maps a view to its counts per label; a ``None`` label (a failed
    answer, or a judgment that carries a score and no label) is not an answer here. A view
    with no labelled judgment is left out: a reader that returns a score per pair is not
    constant in this sense (whether a score's spread is too small to carry information is
    another check, and would be made where the score is read, not here).

    Example:
        >>> constant_views({"user": {"High": 97, "Low": 3}, "item": {"High": 60, "Low": 40},
        ...                 "score": {None: 100}}, 0.95)
        {'user': {'label': 'High', 'share': 0.97, 'answered': 100}}
    """
    out: dict[str, dict[str, Any]] = {}
    for view, counts in label_counts_per_view.items():
        answered = {lab: int(n) for lab, n in counts.items() if lab is not None and n > 0}
        total = sum(answered.values())
        if not total:
            continue
        label = max(answered, key=lambda lab: (answered[lab], str(lab)))  # ties: stable order
        top = answered[label] / total
        if top >= share - 1e-12:  # share * total can fall a hair below an exact count
            out[view] = {"label": label, "share": top, "answered": total}
    return out


def describe_constant(constant: dict[str, dict[str, Any]], share: float) -> str:
    """One line naming each constant view (:func:`constant_views`) and the setting."""
    parts = [f"{c['label']} for {c['share']:.1%} of the {view} view's {c['answered']} answered "
             "judgments" for view, c in constant.items()]
    return f"the rater says {'; '.join(parts)} (verdicts.constant_share = {share:g})"


# ---------------------------------------------------------------------------- thresholds
def tau_from_share(scores: np.ndarray, share: float) -> tuple[float, float]:
    """The tau that makes ``ceil(share * n)`` of ``scores`` say High (``score >= tau``); ties
    at tau all say High, so the realised share (returned second) can be larger."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if len(scores) == 0:
        raise ValueError("no scores to take a share of")
    k = max(1, math.ceil(share * len(scores) - 1e-9))
    tau = float(scores[k - 1])
    return tau, float((scores >= tau).mean())


def _grid(scores: np.ndarray) -> np.ndarray:
    values = np.unique(scores)
    if len(values) > MAX_GRID:
        values = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, MAX_GRID), method="lower"))
    return values


def taus_by_kappa(score_user: np.ndarray, score_item: np.ndarray, hard: np.ndarray
                  ) -> tuple[float, float, float]:
    """The pair ``(tau_user, tau_item)`` whose verdicts (hard iff both scores >= their tau)
    agree best with ``hard`` by Cohen's kappa, and that kappa.

    Every observed score is tried per view (quantiles beyond :data:`MAX_GRID`), plus +inf
    (nobody says High). Ties go to the smallest taus (the fewest pairs judged noisy).
    """
    su, si = np.asarray(score_user, float), np.asarray(score_item, float)
    hard = np.asarray(hard, bool)
    gu, gi = _grid(su), _grid(si)
    # index of the largest grid value <= score, shifted by one (0: below every grid value)
    iu = np.searchsorted(gu, su, side="right")
    ii = np.searchsorted(gi, si, side="right")

    def dominance(mask: np.ndarray) -> np.ndarray:
        # D[a, b] = #pairs (in mask) with user index >= a+1 and item index >= b+1, i.e. the
        # pairs judged hard by taus (gu[a], gi[b]); the last row/column is tau = +inf.
        h = np.zeros((len(gu) + 2, len(gi) + 2))
        np.add.at(h, (iu[mask], ii[mask]), 1.0)
        d = h[::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]
        return d[1:, 1:]

    pred_hard, both_hard = dominance(np.ones(len(hard), bool)), dominance(hard)
    # the kappa of every pair of taus at once: a stack of 2x2 confusion matrices
    kappa = cohen_kappa(binary_confusion(both_hard, pred_hard, hard.sum(), len(hard)))
    kappa = np.where(np.isnan(kappa), -np.inf, kappa)  # undefined: never the best
    # first max: smallest taus; kappas equal to 12 digits are a tie (float noise is no winner)
    a, b = np.unravel_index(int(np.argmax(np.round(kappa, 12))), kappa.shape)
    taus = np.append(gu, np.inf), np.append(gi, np.inf)
    best = float(kappa[a, b])
    return float(taus[0][a]), float(taus[1][b]), best if math.isfinite(best) else math.nan


def threshold_cv(score_user: np.ndarray, score_item: np.ndarray, hard: np.ndarray,
                 groups: np.ndarray, *, folds: int, seed: int = 0) -> float:
    """The threshold rule's kappa as it would do on pairs its taus were not chosen on: taus
    by :func:`taus_by_kappa` on ``folds - 1`` folds grouped by user (``groups``:
    :func:`~llmhni_local.eval.stats.group_folds`), the verdicts of the held-out fold by
    them, all held-out verdicts pooled into one kappa against ``hard``. The in-sample kappa
    (taus chosen and judged on the same pairs) is biased up; this one is not. A fold whose
    training side has one verdict class chooses nothing; its pairs are left out."""
    su, si = np.asarray(score_user, float), np.asarray(score_item, float)
    hard = np.asarray(hard, bool)

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray | None:
        if hard[train].all() or not hard[train].any():
            return None
        tu, ti, _ = taus_by_kappa(su[train], si[train], hard[train])
        return (su[test] >= tu) & (si[test] >= ti)

    pred = cross_fit(group_folds(groups, hard, folds, seed), fit_predict)
    ok = np.isfinite(pred)
    return binary_kappa(pred[ok] == 1.0, hard[ok])


# ---------------------------------------------------------------------------- logistic model
def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 100
                 ) -> dict[str, np.ndarray]:
    """Class-balanced L2 logistic regression by Newton's method on standardised features.

    Each class weighs half of the total (weights ``n / (2 n_c)``); the intercept is not
    penalised. Constant features get weight 0. Returns mean, std, coef, intercept.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, bool)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, np.inf)  # a constant column becomes 0
    z = np.column_stack([np.ones(len(x)), (x - mean) / std])
    n_pos = y.sum()
    w = np.where(y, len(y) / (2.0 * max(n_pos, 1)), len(y) / (2.0 * max(len(y) - n_pos, 1)))
    penalty = np.full(z.shape[1], float(l2))
    penalty[0] = 1e-9  # the intercept is (practically) free
    beta = np.zeros(z.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -35, 35)))
        grad = z.T @ (w * (p - y)) + penalty * beta
        hess = (z * (w * p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return {"mean": mean, "std": std, "coef": beta[1:], "intercept": beta[:1]}


def predict_logistic(model: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """P(positive) of each row of ``x`` under a :func:`fit_logistic` model."""
    z = (np.asarray(x, np.float64) - model["mean"]) / model["std"]
    return 1.0 / (1.0 + np.exp(-np.clip(z @ model["coef"] + model["intercept"][0], -35, 35)))


def logistic_cv(features: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, *,
                folds: int, l2: float, seed: int = 0) -> dict[str, dict[str, float]]:
    """Out-of-fold AUC, verdict kappa and accuracy (positive iff P >= 0.5) of one
    :func:`fit_logistic` model per feature set, every model on the same folds, GROUPED BY
    USER (``groups``: :func:`~llmhni_local.eval.stats.group_folds`): no user's pairs on both
    sides of a fold, so a model cannot score a pair by what it learned of its user elsewhere.
    A fold whose training side has one class fits nothing; its pairs are left out of the
    figures (``n``: the pairs scored)."""
    y = np.asarray(y, bool)
    fold = group_folds(groups, y, folds, seed)
    out: dict[str, dict[str, float]] = {}
    for name, x in features.items():
        x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)

        def fit_predict(train: np.ndarray, test: np.ndarray, x=x) -> np.ndarray | None:
            if y[train].all() or not y[train].any():
                return None
            return predict_logistic(fit_logistic(x[train], y[train], l2), x[test])

        oof = cross_fit(fold, fit_predict)
        ok = np.isfinite(oof)
        p, t = oof[ok], y[ok]
        out[name] = {"auc": auc(p, t), "kappa": binary_kappa(p >= 0.5, t),
                     "accuracy": float(((p >= 0.5) == t).mean()) if ok.any() else math.nan,
                     "n": int(ok.sum())}
    return out


#: The stacked rule's candidate models, simplest first: a tie in cross-validated AUC goes to
#: the earlier one.
MODEL_ORDER = ("non_llm", "llm", "stacked")


def choose_model(cv: dict[str, dict[str, float]]) -> tuple[str, str]:
    """The candidate model (of :data:`MODEL_ORDER`) with the best cross-validated AUC and why,
    so the model used is never worse in cross-validation than either part. AUCs are compared
    to 12 digits (a difference below is float noise, a tie); NaN counts as the worst.

    >>> choose_model({"llm": {"auc": 0.6}, "non_llm": {"auc": 0.6}, "stacked": {"auc": 0.55}})[0]
    'non_llm'
    """
    def score(name: str) -> float:
        value = float(cv[name]["auc"])
        return round(value, 12) if math.isfinite(value) else -math.inf

    best = max(MODEL_ORDER, key=score)  # max keeps the first of equals: the simplest
    figures = ", ".join(f"{name} {cv[name]['auc']:.3f}" for name in MODEL_ORDER)
    return best, (f"best cross-validated AUC ({figures}); ties go to the simpler model "
                  "(non_llm, then llm, then stacked)")




def audit_verdict(label: str) -> str:
    """An audited label read as a verdict: High is hard, Medium and Low are noisy."""
    return "hard" if label == "High" else "noisy"


def model_verdict(label_user: str | None, label_item: str | None) -> str | None:
    """The rater's verdict from its two views' labels; ``None`` when a view failed."""
    if label_user is None or label_item is None:
        return None
    return "hard" if label_user == "High" and label_item == "High" else "noisy"
