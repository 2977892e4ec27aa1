"""The figures of an assessment: scores, label counts, the constant-rater check, AUCs (raw
and cross-fitted with folds grouped by user), kappas, speed and coverage costs (the last two
from ``llmhni/candidates.py``, which the run report reads too)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from llmhni_local.assess.settings import AssessSettings
from llmhni_local.audit.agreement import agreement
from llmhni_local.engine.api import LABELS
from llmhni_local.eval.stats import auc, grouped_auc_interval
from llmhni_local.judgments.store import VIEWS
from llmhni_local.llmhni.candidates import (  # noqa: F401 (add_times, coverage_costs: assess.run)
    add_times,
    count_kinds,
    coverage,
    coverage_costs,
)
from llmhni_local.verdicts.decide import non_llm_features
from llmhni_local.verdicts.rules import (
    audit_verdict,
    constant_views,
    high_score,
    logistic_cv,
    model_verdict,
    tau_from_share,
    threshold_cv,
)

if TYPE_CHECKING:
    from llmhni_local.data.dataset import Interactions
    from llmhni_local.judgments.plan import RateReport


def judgment_scores(frame) -> np.ndarray:
    """Per judgment row: its own ``score`` where the row has one (likelihood mode), else
    ``log P(High) - log(P(Medium) + P(Low))`` of its probabilities; NaN without either."""
    probs = frame[["p_high", "p_medium", "p_low"]].to_numpy(np.float64)
    have = np.isfinite(probs).all(axis=1)
    out = np.where(have, high_score(np.nan_to_num(probs)), np.nan)
    if "score" in frame.columns:
        own = frame["score"].to_numpy(np.float64, na_value=np.nan)
        out = np.where(np.isfinite(own), own, out)
    return out


def view_table(sample, judgments):
    """The sample with, per view: ``label_<view>`` (None: no label), ``score_<view>``,
    ``judged_<view>`` (a row is stored) and ``scored_<view>`` (a judgment that carries a
    score of its own and no label: the likelihood reader's, not a failure)."""
    table = sample.copy()
    for view in VIEWS:
        rows = judgments[judgments["view"] == view].copy()
        rows[f"score_{view}"] = judgment_scores(rows)
        rows[f"label_{view}"] = rows["label"]
        own = (rows["score"].to_numpy(np.float64, na_value=np.nan) if "score" in rows.columns
               else np.full(len(rows), np.nan))
        rows[f"scored_{view}"] = rows["label"].isna().to_numpy() & np.isfinite(own)
        rows[f"judged_{view}"] = True
        cols = [f"{c}_{view}" for c in ("label", "score", "judged", "scored")]
        table = table.merge(rows[["user", "item", *cols]], on=["user", "item"], how="left")
        for c in ("judged", "scored"):
            table[f"{c}_{view}"] = table[f"{c}_{view}"].astype("boolean").fillna(False) \
                .astype(bool)
        table[f"label_{view}"] = table[f"label_{view}"].astype(object).where(
            table[f"label_{view}"].notna(), None)
    return table


def label_counts(table, view: str, rows: np.ndarray | None = None) -> dict[str, int]:
    """Counts of a view's judgments (of ``rows``, a mask; default all): High, Medium, Low,
    ``scored`` (a score and no label: the likelihood reader) and ``failed`` (neither)."""
    keep = table[f"judged_{view}"].to_numpy(bool)
    if rows is not None:
        keep = keep & np.asarray(rows, dtype=bool)
    labels = table.loc[keep, f"label_{view}"].tolist()
    scored = table.loc[keep, f"scored_{view}"].to_numpy(bool)
    out = {lab: sum(x == lab for x in labels) for lab in LABELS}
    out["scored"] = int(scored.sum())
    out["failed"] = int(len(labels) - sum(out[lab] for lab in LABELS) - out["scored"])
    return out


def constant_view(counts: dict[str, int], scores: np.ndarray, share: float) -> dict[str, Any]:
    """Whether one value takes at least ``share`` of a view's judgments: its most frequent
    label among the answered judgments (failures are no answer; the verdict rules'
    :func:`~llmhni_local.verdicts.rules.constant_views`); for a view of score-only
    judgments (no label at all), its most frequent score to 6 digits, among the judgments
    with a score.

    >>> constant_view({"High": 97, "Medium": 2, "Low": 1, "failed": 9}, np.zeros(0), 0.95)
    {'constant': True, 'value': 'High', 'share': 0.97, 'judgments': 100, 'threshold': 0.95}
    """
    answered = {lab: int(counts[lab]) for lab in LABELS}
    n = sum(answered.values())
    if n:
        value = max(LABELS, key=lambda lab: answered[lab])  # ties: High, Medium, Low
        top_share = answered[value] / n
        return {"constant": bool(constant_views({"view": answered}, share)), "value": value,
                "share": top_share, "judgments": n, "threshold": share}
    vals, freq = np.unique(np.round(scores[np.isfinite(scores)], 6), return_counts=True)
    if not len(vals):
        return {"constant": False, "value": None, "share": math.nan, "judgments": 0,
                "threshold": share}
    top_share = float(freq.max() / freq.sum())
    return {"constant": top_share >= share - 1e-12, "value": float(vals[freq.argmax()]),
            "share": top_share, "judgments": int(freq.sum()), "threshold": share}


# ---------------------------------------------------------------------------- figures
def task_figures(table, task: str, score_cols: list[str], non_llm: np.ndarray,
                 settings: AssessSettings) -> dict[str, Any]:
    """One task (``natural``: noisy against clean; ``synthetic``: never-seen against clean):
    the AUC of each LLM score raw (with a 95% bootstrap interval over the sample's users),
    and the cross-fitted AUCs of the LLM score(s) alone, of
    the non-LLM features alone and of both: the stacked verdict rule's class-balanced logistic
    models (``l2`` = 1), out of fold on folds grouped by user
    (:func:`~llmhni_local.verdicts.rules.logistic_cv`)."""
    positive = "noisy" if task == "natural" else "synthetic"
    rows = table["cls"].isin(["clean", positive]).to_numpy()
    llm = -table.loc[rows, score_cols].to_numpy(np.float64)  # noise score
    ok = np.isfinite(llm).all(axis=1)
    y = (table.loc[rows, "cls"] == positive).to_numpy()[ok]
    groups = table.loc[rows, "user"].to_numpy(np.int64)[ok]
    x_llm, x_non = llm[ok], non_llm[rows][ok]
    out: dict[str, Any] = {"positive": positive, "pairs": int(ok.sum()),
                           "positives": int(y.sum()), "left_out_no_score": int((~ok).sum())}
    if len(score_cols) == 1:
        out["auc"] = auc(x_llm[:, 0], y)
        # users, not pairs, are the sample's independent draws: resample them
        out["auc_ci95"] = list(grouped_auc_interval(x_llm[:, 0], y, groups, seed=settings.seed))
    cv = logistic_cv(
        {"llm": x_llm, "non_llm": x_non, "stacked": np.column_stack([x_llm, x_non])}, y,
        groups, folds=settings.folds, l2=1.0, seed=settings.seed)
    out["cross_fitted"] = {name: figs["auc"] for name, figs in cv.items()}
    out["cross_fitted"]["llm_gain_over_non_llm"] = (out["cross_fitted"]["stacked"]
                                                    - out["cross_fitted"]["non_llm"])
    return out


def non_llm_matrix(table, candidates: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Rec_pre's score, log(1 + item popularity), log(1 + user activity) per sample row (the
    stacked verdict rule's non-LLM features without the candidate kind, which would give the
    synthetic class away)."""
    return non_llm_features(table, candidates, train)[:, :3]


def _labelled(table):
    """The labelled (observed) pairs judged in both views: what the kappas are computed on."""
    return table[table["label"].notna() & table["judged_user"] & table["judged_item"]]


def agreement_figures(table) -> dict[str, Any]:
    """3-class kappa per view and verdict kappa against the labels of the observed pairs."""
    lab = _labelled(table)
    truth = lab["label"].tolist()
    out: dict[str, Any] = {v: agreement(truth, lab[f"label_{v}"].tolist()) for v in VIEWS}
    out["verdict"] = agreement([audit_verdict(t) for t in truth],
                               [model_verdict(a, b) for a, b in
                                zip(lab["label_user"], lab["label_item"])], ("hard", "noisy"))
    return out


def threshold_figures(table, settings: AssessSettings) -> dict[str, Any]:
    """The verdict kappa of the threshold rule (``verdicts.rule = "threshold"``: a pair is
    hard iff both views' scores reach their tau) on the labelled observed pairs judged in
    both views, with its taus set the rule's two ways: ``share``, each view's tau at
    ``settings.target_share`` of the sample's scores (``tau_from = "share"``, no labels
    used); ``audits_cv``, the taus with the best kappa on the labels, cross-fitted on folds
    grouped by user (``tau_from = "audits"``; :func:`~llmhni_local.verdicts.rules.threshold_cv`).
    Unlike the argmax verdict kappa it reads a judge with one constant label, and a
    likelihood reader, through their scores."""
    lab = _labelled(table)
    su, si = (lab[f"score_{v}"].to_numpy(np.float64) for v in VIEWS)
    ok = np.isfinite(su) & np.isfinite(si)
    su, si = su[ok], si[ok]
    truth = [audit_verdict(t) for t in lab["label"].to_numpy()[ok]]
    hard = np.array([t == "hard" for t in truth], dtype=bool)
    out: dict[str, Any] = {"pairs": int(ok.sum()), "target_share": settings.target_share}
    if not ok.any():
        return {**out, "share": None, "audits_cv": None}
    tu, _ = tau_from_share(su, settings.target_share)
    ti, _ = tau_from_share(si, settings.target_share)
    said = (su >= tu) & (si >= ti)
    share = agreement(truth, ["hard" if h else "noisy" for h in said], ("hard", "noisy"))
    share.update(tau_user=tu, tau_item=ti, realised_share_hard=float(said.mean()))
    if hard.all() or not hard.any():
        return {**out, "share": share, "audits_cv": None}
    users = lab["user"].to_numpy(np.int64)[ok]
    cv = threshold_cv(su, si, hard, users, folds=settings.folds, seed=settings.seed)
    return {**out, "share": share, "audits_cv": {"kappa": cv, "folds": settings.folds,
                                                  "grouped_by": "user"}}


# ---------------------------------------------------------------------------- speed
class BatchClock:
    """Times the rating batches, for the speed without the engine's start."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def __call__(self, batch: int) -> None:
        self.marks.append(time.perf_counter())


def measured_speed(report: RateReport, clock: BatchClock, batch_size: int) -> dict[str, Any]:
    """Judgments per second of this call: overall (engine start included) and steady (from
    the end of the first batch to the end of the last)."""
    out: dict[str, Any] = {"rated": report.rated, "seconds": report.seconds,
                           "judgments_per_s": (report.rated / report.seconds
                                               if report.rated and report.seconds > 0 else None),
                           "judgments_per_s_steady": None, "start_seconds": None}
    if len(clock.marks) >= 2:
        after_first = report.rated - min(batch_size, report.rated)
        span = clock.marks[-1] - clock.marks[0]
        if after_first > 0 and span > 0:
            steady = after_first / span
            out["judgments_per_s_steady"] = steady
            out["start_seconds"] = max(0.0, report.seconds - report.rated / steady)
    return out



def run_coverage(candidates: np.ndarray, data: Interactions) -> dict[str, Any]:
    return {"candidates": len(candidates), **count_kinds(candidates),
            **coverage(candidates, data.train, data.train_noise)}
