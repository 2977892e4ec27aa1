"""Hard or noisy: the verdict on each candidate pair (docs/DESIGN.md, "Verdicts" and
"Verdict rules").

Under the default rule (``verdicts.rule = "argmax"``) a pair is **hard** when both views'
labels are High, and **noisy** for any other pair of
labels (the paper's words). A pair one of whose views is a failure (an answer that was not a
label) gets **no verdict**: its verdict is ``failed``, it is counted, and it is never labelled
hard or noisy; the graph stage leaves such a pair as it is. A pair with a view not rated yet is
``unrated`` (also no verdict).

What the verdict means depends on the candidate kind:

========== ================================ ==================================
kind        hard                             noisy
========== ================================ ==================================
observed    hard positive: **keep**          false positive: **remove**
unobserved  missing positive: **add**        nothing (stays unobserved)
========== ================================ ==================================

The label probabilities are kept: ``p_hard = P_user(High) * P_item(High)`` (NaN where a view
has no probabilities), a soft score of the same rule.

The other rules (``threshold``, ``stacked``; optional batch calibration) re-decide only the
pairs that have a verdict under the argmax rule, so failed and unrated pairs never get one;
their pure parts live in :mod:`llmhni_local.verdicts.rules`. Whatever is fitted (taus,
calibration means, the stacked model) leaves out the audited pairs that trained an adapter.

Judgments imported from a file under a source name (``judgments/imported.py``) are decided
over the pairs they name rather than over ``candidates.parquet`` (:func:`~llmhni_local.judgments.imported.source_candidates`;
docs/IMPORTING.md, "Judgments from elsewhere").

Writes ``RUN/verdicts.parquet`` (one row per candidate; ``score_user``/``score_item`` under the
threshold rule, ``p_stacked`` under the stacked one: P(hard) of the model that rule chose) and
``RUN/verdicts.json`` (counts, and in ``verdict_rule`` what the rule used: taus and their
source with, for taus from audits, ``kappa_in_sample`` (taus chosen and judged on the same
audited pairs: optimistic) and ``kappa_cross_fitted`` (taus chosen on the other folds: the
honest estimate), calibration, the stacked rule's chosen model and all three cross-validated
figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, jsonable, write_json
from llmhni_local.engine.api import LABELS
from llmhni_local.eval.stats import binary_kappa
from llmhni_local.judgments.imported import source_candidates, source_rating, view_counts
from llmhni_local.judgments.store import VIEWS
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
from llmhni_local.verdicts.guards import guard_imported
from llmhni_local.verdicts.rules import (
    VerdictSettings,
    audit_verdict,
    batch_calibrate,
    choose_model,
    constant_views,
    fit_logistic,
    high_score,
    log_ratios,
    logistic_cv,
    predict_logistic,
    tau_from_share,
    taus_by_kappa,
    threshold_cv,
)

VERDICTS_FILE = "verdicts.parquet"
COUNTS_FILE = "verdicts.json"
VERDICTS: tuple[str, ...] = ("hard", "noisy", "failed", "unrated")
SCORE_TEXT = "log P(High) - log(P(Medium) + P(Low)) of the (calibrated) label probabilities"
RULE_TEXT = {
    "argmax": "hard iff both views say High; a failed view gives no verdict",
    "threshold": "hard iff both views' High score clears its tau; a failed view gives no verdict",
    "stacked": "hard iff the logistic model with the best cross-validated AUC on the audited "
               "pairs (LLM features, non-LLM features or both) gives P(hard) >= 0.5; a failed "
               "view gives no verdict",
}
ACTIONS = {("observed", "hard"): "keep", ("observed", "noisy"): "remove",
           ("unobserved", "hard"): "add", ("unobserved", "noisy"): "nothing"}


def compute_verdicts(candidates: np.ndarray, judgments) -> "Any":
    """One row per candidate with both views' labels and probabilities, verdict and action.

    Args:
        candidates: a candidate array (``method.candidates.CANDIDATE_DTYPE``).
        judgments: DataFrame of store rows with columns user, item, view, label, ok, p_high,
            p_medium, p_low, label_mass (one model and prompt per view).
    """
    import pandas as pd

    out = pd.DataFrame({"user": candidates["user"].astype(np.int64),
                        "item": candidates["item"].astype(np.int64),
                        "kind": candidates["kind"].astype(str)})
    cols = ["label", "ok", "p_high", "p_medium", "p_low", "label_mass"]
    if "score" in judgments.columns:  # the likelihood reader's score (judgments/likelihood.py)
        judgments = judgments.rename(columns={"score": "reader"})
        cols.append("reader")
    for view in VIEWS:
        part = judgments[judgments["view"] == view][["user", "item", *cols]]
        if part.duplicated(["user", "item"]).any():
            raise ValueError(f"several stored judgments per pair in view {view!r}")
        part = part.rename(columns={c: f"{c}_{view}" for c in cols})
        out = out.merge(part, on=["user", "item"], how="left")
    rated = out["ok_user"].notna() & out["ok_item"].notna()
    ok = rated & (out["ok_user"] == 1) & (out["ok_item"] == 1)
    both_high = ok & (out["label_user"] == "High") & (out["label_item"] == "High")
    verdict = np.where(~rated, "unrated", np.where(~ok, "failed",
                                                   np.where(both_high, "hard", "noisy")))
    out["verdict"] = verdict
    out["action"] = [ACTIONS.get((k, v), "none") for k, v in zip(out["kind"], verdict)]
    out["p_hard"] = out["p_high_user"].astype(float) * out["p_high_item"].astype(float)
    for c in ("ok_user", "ok_item"):
        out[c] = out[c].fillna(0).astype(bool)
    return out


def check_reader(settings: VerdictSettings, mode: str, where: str | Path = "") -> None:
    """The likelihood reader gives a score per view, no label: only the threshold rule (at
    a share, or from audits) reads it, and batch calibration (of label probabilities) does
    not apply. The stacked rule's LLM features are label log-odds, which it does not have."""
    if mode != "likelihood":
        return
    if settings.rule != "threshold":
        raise UserError(f"{where or 'verdicts'}: rate.mode = 'likelihood' stores scores, not "
                        f"labels; verdicts.rule = {settings.rule!r} has nothing to read (use "
                        "verdicts.rule = 'threshold')")
    if settings.calibration != "none":
        raise UserError(f"{where or 'verdicts'}: verdicts.calibration = "
                        f"{settings.calibration!r} calibrates label probabilities; the "
                        "likelihood reader's scores have none (use calibration 'none')")


def verdict_counts(verdicts) -> dict[str, Any]:
    """Counts per candidate kind and verdict, of each graph action and, where the table has
    the views' labels, of each view's answered labels (``labels``; a judgment with no label,
    failed or a score alone, is not counted there)."""
    counts: dict[str, Any] = {}
    for kind in ("observed", "unobserved"):
        sub = verdicts[verdicts["kind"] == kind]
        counts[kind] = {v: int((sub["verdict"] == v).sum()) for v in VERDICTS}
        counts[kind]["total"] = int(len(sub))
    counts["actions"] = {a: int((verdicts["action"] == a).sum())
                         for a in ("keep", "remove", "add", "nothing")}
    counts["no_verdict"] = int(verdicts["verdict"].isin(["failed", "unrated"]).sum())
    counts["labels"] = {view: {str(lab): int(n) for lab, n in
                               verdicts[f"label_{view}"].dropna().value_counts().items()}
                        for view in VIEWS if f"label_{view}" in verdicts}
    return counts


def constant_rater(constant: dict[str, dict[str, Any]], settings: VerdictSettings) -> bool:
    """Whether the verdicts carry no information because the rater says one thing: the rule
    decides by the labels (argmax, no calibration; other rules read the probabilities), and
    either every view is constant or one is constant at a label other than High (then every
    verdict is noisy). One view constant at High leaves the other view's labels deciding."""
    if not constant or settings.rule != "argmax" or settings.calibration != "none":
        return False
    return set(constant) >= set(VIEWS) or any(c["label"] != "High" for c in constant.values())


def check_imported_rule(settings: VerdictSettings, manifest: dict[str, Any],
                        where: str | Path = "") -> None:
    """Judgments imported from a file (``judgments/imported.py``) carry labels and/or scores
    but no label probabilities: the argmax rule reads their labels, the threshold rule their
    scores; calibration and the stacked rule (which read probabilities) do not apply."""
    if manifest.get("imported") is not True:
        return
    what = (f"{where or 'verdicts'}: the judgments of source {manifest.get('source')!r} "
            "(imported) have no label probabilities")
    if settings.calibration != "none":
        raise UserError(f"{what}; verdicts.calibration = {settings.calibration!r} has nothing "
                        "to calibrate (use calibration 'none')")
    if settings.rule == "stacked":
        raise UserError(f"{what}; verdicts.rule = 'stacked' reads them (use 'argmax' on "
                        "labels or 'threshold' on scores)")
    if settings.rule == "threshold" and not manifest.get("scores"):
        raise UserError(f"{what} and no scores; verdicts.rule = 'threshold' has nothing to "
                        "read (use 'argmax', or import a score column)")
    if settings.rule == "argmax" and not manifest.get("labels"):
        raise UserError(f"{where or 'verdicts'}: the judgments of source "
                        f"{manifest.get('source')!r} are scores without labels; verdicts.rule "
                        "= 'argmax' has nothing to read (use verdicts.rule = 'threshold')")


def write_verdicts(run_dir: str | Path, settings: VerdictSettings | None = None, *,
                   audits: "Audits", train: np.ndarray | None = None,
                   source: str | None = None, data: Any = None) -> dict[str, Any]:
    """Compute the verdicts of ``RUN``'s last rating run (or of imported source ``source``)
    and write them; returns the counts.

    Judgments imported from a file (``judgments/imported.py``) are decided over the pairs
    they name (:func:`~llmhni_local.judgments.imported.source_candidates`), not over ``candidates.parquet``: a pair the file
    judged is a candidate in its own right, and none is dropped. ``verdicts.json`` then names
    the source (``judgments``: source, file, sha256, pairs judged in one view only, pairs that
    are and are not candidates of the run).

    Args:
        run_dir: the run folder.
        settings: the verdict rule. (default: ``VerdictSettings()``, the argmax rule)
        audits: the run's audited labels that rules may fit on
            (:func:`llmhni_local.audit.records.load_audits`; ``Audits.empty()`` for none). They
            come in as data, so the verdict room never reads the audit store.
        train: the training edges ``(n, 2)`` (user, item); only the stacked rule reads them
            (item popularity and user activity).
        source: an imported source's name (``RUN/ratings/NAME.json``); ``None``: the last
            rating run (``RUN/rating.json``).
        data: the run's :class:`~llmhni_local.data.dataset.Interactions`; required with an
            imported source: its verdicts pass :func:`guard_imported` (held-out adds held
            back unless ``settings.keep_held_out``, users' last edges kept), counted in
            ``verdicts.json`` as for an imported verdicts file.
    """
    settings = settings or VerdictSettings()
    run_dir = Path(run_dir)
    judgments, manifest = source_rating(run_dir, source)
    imported = manifest.get("imported") is True
    check_imported_rule(settings, manifest, run_dir)  # before check_reader: says why better
    check_reader(settings, manifest.get("mode", "judge"), run_dir)
    if imported:
        candidates, of_run = source_candidates(run_dir, judgments)
    else:
        candidates = load_candidates(run_dir / CANDIDATES_FILE)
    verdicts = compute_verdicts(candidates, judgments)
    info: dict[str, Any] = {"rule": "argmax", "calibration": "none"}
    if settings.rule != "argmax" or settings.calibration != "none":
        verdicts, info = apply_rule(verdicts, candidates, settings, audits, train=train)
    guards = None
    if imported:
        if data is None:
            raise ValueError("write_verdicts: an imported source needs the run's data (guards)")
        guards = guard_imported(verdicts, train=data.train, val=data.val, test=data.test,
                                n_users=data.n_users, n_items=data.n_items,
                                keep_held_out=settings.keep_held_out)
    counts = verdict_counts(verdicts)
    if guards is not None:  # the held-back adds: counts["held_out"]
        counts.update(guards)
    constant = constant_views(counts["labels"], settings.constant_share)
    counts.update(constant=constant, rater_constant=constant_rater(constant, settings),
                  constant_share=settings.constant_share)
    counts.update(model_id=manifest["model_id"], adapter=manifest["adapter"],
                  prompt_hashes={v: manifest["views"][v]["prompt_hash"] for v in VIEWS},
                  rule=RULE_TEXT[settings.rule], verdict_rule=jsonable(info))
    if imported:  # where the judgments came from, and what of them gave no verdict
        views = view_counts(judgments["user"].to_numpy(), judgments["item"].to_numpy(),
                            judgments["view"].to_numpy(), int(candidates["item"].max()) + 1)
        counts["judgments"] = {
            "imported": True, "source": manifest.get("source"), "file": manifest.get("file"),
            "sha256": manifest.get("sha256"), "format": manifest.get("format"),
            "mode": manifest.get("mode"), **views, **of_run}
    with atomic_path(run_dir / VERDICTS_FILE) as tmp:
        verdicts.to_parquet(tmp, index=False, engine="pyarrow")
    write_json(run_dir / COUNTS_FILE, counts)
    return counts


# ---------------------------------------------------------------------------- other rules
@dataclass(frozen=True)
class Audits:
    """The audited labels of a run that may be fitted on: adapter-training pairs left out."""

    labels: Any  # DataFrame user, item, label
    trained: frozenset  # (user, item) pairs that trained an adapter
    audited: int  # every audited pair, trained ones included

    @classmethod
    def empty(cls) -> "Audits":
        import pandas as pd

        return cls(pd.DataFrame({"user": [], "item": [], "label": []}), frozenset(), 0)


def apply_rule(table, candidates: np.ndarray, settings: VerdictSettings, audits: Audits, *,
               train: np.ndarray | None = None):
    """Re-decide the judged pairs of a :func:`compute_verdicts` table under ``settings``;
    failed and unrated pairs stay as they are. Returns (table, what the rule used)."""
    table = table.copy()
    pairs = list(zip(table["user"].astype(int), table["item"].astype(int)))
    fit = ~np.array([p in audits.trained for p in pairs], dtype=bool)
    truth, audit_info = audited_truth(table, audits, fit)
    if settings.rule == "stacked":
        high, info = _stacked(table, candidates, settings, truth, audit_info, train)
        info["audits"] = audit_info
        return _redecide(table, high, high), info
    scores, probs, info = _view_scores(table, settings, fit)
    if settings.rule == "argmax":  # batch calibration: argmax of the calibrated probabilities
        high = {v: probs[v].argmax(axis=1) == 0 for v in VIEWS}
        return _redecide(table, high["user"], high["item"]), info
    taus = choose_taus(scores, settings, fit, truth, audit_info, info,
                       users=table["user"].to_numpy(np.int64))
    high = {v: np.isfinite(scores[v]) & (scores[v] >= taus[v]) for v in VIEWS}
    info["realised_share_high"] = {v: float(high[v][fit & np.isfinite(scores[v])].mean())
                                   for v in VIEWS}
    return _redecide(table, high["user"], high["item"]), info


def _redecide(table, high_user: np.ndarray, high_item: np.ndarray):
    judged = table["verdict"].isin(["hard", "noisy"]).to_numpy()
    hard = np.asarray(high_user, bool) & np.asarray(high_item, bool)
    table["verdict"] = np.where(judged, np.where(hard, "hard", "noisy"), table["verdict"])
    table["action"] = [ACTIONS.get((k, v), "none") for k, v in zip(table["kind"], table["verdict"])]
    return table


def audited_truth(table, audits: Audits, fit: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Per row: True (audited hard), False (audited noisy) or NaN-like None; and counts.

    Only judged rows (both views answered) that trained no adapter can be fitted on."""
    label = {(int(u), int(i)): str(lab) for u, i, lab in
             zip(audits.labels["user"], audits.labels["item"], audits.labels["label"])}
    judged = table["verdict"].isin(["hard", "noisy"]).to_numpy() & fit
    truth = np.full(len(table), np.nan)
    for r, (u, i) in enumerate(zip(table["user"].astype(int), table["item"].astype(int))):
        if judged[r] and (u, i) in label:
            truth[r] = float(audit_verdict(label[(u, i)]) == "hard")
    usable = ~np.isnan(truth)
    info = {"audited": audits.audited, "trained_left_out": audits.audited - len(label),
            "not_judged_candidates": len(label) - int(usable.sum()),
            "usable": int(usable.sum()), "hard": int((truth == 1).sum()),
            "noisy": int((truth == 0).sum())}
    return truth, info


def _require_audits(settings: VerdictSettings, info: dict[str, Any], per_class: int = 1) -> None:
    what = (f"verdicts.rule = {settings.rule!r}" if settings.rule == "stacked"
            else "verdicts.tau_source = 'audits'")
    if info["usable"] < settings.min_audits:
        raise UserError(
            f"{what}: {info['usable']} usable audited pairs (of {info['audited']} audited; "
            f"{info['trained_left_out']} trained an adapter, {info['not_judged_candidates']} "
            f"are not candidates judged in both views) is below verdicts.min_audits = "
            f"{settings.min_audits}")
    small = min(info["hard"], info["noisy"])
    if small < per_class:
        cls = "hard" if info["hard"] < info["noisy"] else "noisy"
        raise UserError(f"{what}: {info[cls]} of {info['usable']} usable audited pairs are "
                        f"{cls} (audited High is hard, Medium/Low noisy); fitting needs at "
                        f"least {per_class} of each verdict")


def _view_probs(table, view: str, settings: VerdictSettings) -> tuple[np.ndarray, np.ndarray]:
    ok = table[f"ok_{view}"].to_numpy(bool)
    probs = table[[f"p_{lab.lower()}_{view}" for lab in LABELS]].to_numpy(np.float64)
    missing = int((ok & ~np.isfinite(probs).all(axis=1)).sum())
    if missing:
        raise UserError(f"verdicts.rule = {settings.rule!r}, verdicts.calibration = "
                        f"{settings.calibration!r}: {missing} of {int(ok.sum())} answered "
                        f"{view}-view judgments have no label probabilities (the backend gave "
                        "none); use rule 'argmax' with calibration 'none'")
    return probs, ok


def _view_scores(table, settings: VerdictSettings, fit: np.ndarray):
    """Per view: the calibrated probabilities and High score (NaN where the view failed)."""
    info: dict[str, Any] = {"rule": settings.rule, "calibration": settings.calibration,
                            "score": SCORE_TEXT}
    scores, probs = {}, {}
    for view in VIEWS:
        reader = table.get(f"reader_{view}")
        if reader is not None and reader.notna().any():  # the likelihood reader: its score
            ok = table[f"ok_{view}"].to_numpy(bool)
            scores[view] = np.where(ok, reader.to_numpy(np.float64), np.nan)
            probs[view] = np.full((len(table), len(LABELS)), np.nan)
            table[f"score_{view}"] = scores[view]
            info["score"] = "log p(name | view context) - log p(name | neutral context)"
            continue
        p, ok = _view_probs(table, view, settings)
        if not (ok & fit).any():
            raise UserError(f"verdicts.rule = {settings.rule!r}: no {view}-view judgment of a "
                            "pair that trained no adapter was answered with a label")
        if settings.calibration == "batch":
            p, means = batch_calibrate(np.where(ok[:, None], p, np.nan), ok & fit)
            info.setdefault("calibration_means", {})[view] = dict(zip(LABELS, means.tolist()))
        probs[view] = np.where(ok[:, None], p, np.nan)
        scores[view] = np.where(ok, high_score(np.nan_to_num(p)), np.nan)
        table[f"score_{view}"] = scores[view]
    return scores, probs, info


def choose_taus(scores, settings: VerdictSettings, fit: np.ndarray, truth: np.ndarray,
          audit_info: dict[str, Any], info: dict[str, Any], *, users: np.ndarray
                ) -> dict[str, float]:
    """The threshold rule's taus (and what chose them, into ``info``); ``users``: each row's
    user, so the cross-fitted kappa's folds keep a user's pairs together."""
    info["tau_source"] = settings.tau_source
    if settings.tau_source == "share":
        taus = {}
        for v in VIEWS:
            mask = fit & np.isfinite(scores[v])
            taus[v], _ = tau_from_share(scores[v][mask], settings.target_share)
        info["target_share"] = settings.target_share
    else:
        _require_audits(settings, audit_info)
        use = ~np.isnan(truth)
        tu, ti, kappa = taus_by_kappa(scores["user"][use], scores["item"][use], truth[use] == 1)
        taus = {"user": tu, "item": ti}
        info["audits"] = audit_info
        # the taus are chosen on these very pairs, so their kappa is optimistic; the
        # cross-fitted one judges every pair by taus chosen without it
        info["kappa_in_sample"] = kappa
        info["kappa_cross_fitted"] = threshold_cv(
            scores["user"][use], scores["item"][use], truth[use] == 1,
            np.asarray(users, dtype=np.int64)[use], folds=settings.folds, seed=settings.seed)
        info["cross_fitting"] = {"folds": settings.folds, "seed": settings.seed,
                                 "grouped_by": "user",
                                 "how": "taus chosen on the other folds' audited pairs, "
                                        "verdicts of the held-out fold, pooled"}
    info["tau"] = taus
    return taus


def _stacked(table, candidates: np.ndarray, settings: VerdictSettings, truth: np.ndarray,
             audit_info: dict[str, Any], train: np.ndarray | None):
    """Cross-validate the three candidate models (LLM features, non-LLM features, both) on the
    usable audited pairs, refit the one with the best cross-validated AUC on all of them and
    give P(hard) for every judged pair (see :func:`~llmhni_local.verdicts.rules.choose_model`)."""
    if train is None:
        raise UserError("verdicts.rule = 'stacked' needs the training data (item popularity, "
                        "user activity); run it through the pipeline")
    _require_audits(settings, audit_info, per_class=settings.folds)
    judged = table["verdict"].isin(["hard", "noisy"]).to_numpy()
    llm = np.column_stack([log_ratios(np.nan_to_num(_view_probs(table, v, settings)[0]))
                           for v in VIEWS])
    non_llm = non_llm_features(table, candidates, train)
    features = {"llm": llm, "non_llm": non_llm, "stacked": np.column_stack([llm, non_llm])}
    use = ~np.isnan(truth)
    y = truth[use] == 1
    # folds grouped by user: a user's pairs never on both sides of a fold
    cv = logistic_cv({k: x[use] for k, x in features.items()}, y,
                     table["user"].to_numpy(np.int64)[use], folds=settings.folds,
                     l2=settings.l2, seed=settings.seed)
    chosen, why = choose_model(cv)
    cv["argmax_rule"] = {"kappa": binary_kappa((table["verdict"] == "hard").to_numpy()[use], y)}
    model = fit_logistic(features[chosen][use], y, settings.l2)
    p = np.where(judged, predict_logistic(model, features[chosen]), np.nan)
    table["p_stacked"] = p
    names = MODEL_FEATURES[chosen]
    info = {"rule": "stacked", "calibration": "not used: the model's log-ratio features absorb "
            "a per-label rescaling in its intercept", "model": chosen, "chosen_by": why,
            "features": list(names), "coefficients": dict(zip(names, model["coef"].tolist())),
            "intercept": float(model["intercept"][0]), "l2": settings.l2,
            "folds": settings.folds, "grouped_by": "user", "threshold": 0.5,
            "cross_validated": cv,
            "llm_share": {"auc_gain_over_non_llm": cv["stacked"]["auc"] - cv["non_llm"]["auc"],
                          "kappa_gain_over_non_llm":
                              cv["stacked"]["kappa"] - cv["non_llm"]["kappa"]}}
    return judged & (p >= 0.5), info


#: Features of the stacked model: 4 from the rater, 4 from the data and the recommender.
STACKED_FEATURES = ("user_log_high_low", "user_log_medium_low", "item_log_high_low",
                    "item_log_medium_low", "rec_score", "log_item_popularity",
                    "log_user_activity", "observed")
#: Features of each candidate model of the stacked rule.
MODEL_FEATURES = {"llm": STACKED_FEATURES[:4], "non_llm": STACKED_FEATURES[4:],
                  "stacked": STACKED_FEATURES}


def non_llm_features(table, candidates: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Per row: the recommender's score, log(1 + training interactions) of the item and of the
    user, and 1 for an observed candidate (its score is among the user's lowest)."""
    import pandas as pd

    train = np.asarray(train, dtype=np.int64).reshape(-1, 2)
    users, items = table["user"].to_numpy(np.int64), table["item"].to_numpy(np.int64)
    pop = np.bincount(train[:, 1], minlength=int(max(items.max(initial=0), train[:, 1].max(
        initial=0))) + 1)
    act = np.bincount(train[:, 0], minlength=int(max(users.max(initial=0), train[:, 0].max(
        initial=0))) + 1)
    score = pd.DataFrame({"user": candidates["user"].astype(np.int64),
                          "item": candidates["item"].astype(np.int64),
                          "score": candidates["score"].astype(np.float64)})
    score = table[["user", "item"]].merge(score, on=["user", "item"], how="left")["score"]
    return np.column_stack([score.to_numpy(np.float64), np.log1p(pop[items]),
                            np.log1p(act[users]),
                            (table["kind"] == "observed").to_numpy(np.float64)])


def load_verdicts(run_dir: str | Path):
    """The verdicts table of ``RUN`` (for the graph stage)."""
    import pandas as pd

    path = Path(run_dir) / VERDICTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: no verdicts here; run the `verdicts` stage first")
    return pd.read_parquet(path)
