"""``audit report``: how far each rater of a run agrees with the audited labels.

For every rater (model and adapter) with stored judgments under the run's current prompts
(the prompt hashes of ``RUN/rating.json``: same templates, profiles and L), on the audited
pairs it rated:

* per view (user-centric, item-centric): the rater's label against the audited label;
* the combined verdict: the rater's verdict (hard iff both views say High, a failed view gives
  none) against the audited label read as a verdict (High -> hard, Medium or Low -> noisy);

accuracy with its Wilson 95% interval, Cohen's kappa, linear-weighted kappa, the confusion
matrix and the majority-label baseline on the same pairs; the pairs where rater and audit
disagree go to ``disagreements.csv``. Audited pairs that trained an adapter are left out of
every figure, for every rater (so base and tuned raters are compared on the same pairs, none
of which any of them learned from).

Writes ``RUN/audit/report.md``, ``RUN/audit/report.json``, ``RUN/audit/confusion.png`` and
``RUN/audit/disagreements.csv``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.audit.agreement import agreement
from llmhni_local.audit.records import AuditStore, audit_dir
from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, write_json, write_text
from llmhni_local.engine.api import LABELS
from llmhni_local.judgments.plan import read_rating_manifest
from llmhni_local.judgments.store import VIEWS, JudgmentStore
from llmhni_local.verdicts.decide import COUNTS_FILE
from llmhni_local.verdicts.rules import audit_verdict, model_verdict

VERDICT_LABELS = ("hard", "noisy")
VIEW_NAMES = {"user": "user-centric view", "item": "item-centric view",
              "verdict": "combined verdict"}


def evaluate(run_dir: str | Path) -> dict[str, Any]:
    """Every figure of the report, as plain data (no files written)."""
    import pandas as pd

    run_dir = Path(run_dir)
    with AuditStore(run_dir, create=False) as store:
        labels = store.labels()
        trained = store.finetune_pairs(role="train")
        adapters = store.finetune_adapters()
        imports = store.imports()
    if labels.empty:
        raise UserError(f"{run_dir}: no audited labels; run `audit import` first")
    keep = [(int(u), int(i)) not in trained for u, i in zip(labels["user"], labels["item"])]
    excluded = int(len(labels) - sum(keep))
    labels = labels[keep]
    if labels.empty:
        raise UserError(f"{run_dir}: every audited pair trained an adapter; none is left to "
                        "evaluate a rater on (audit more pairs)")
    manifest = read_rating_manifest(run_dir)
    hashes = {v: manifest["views"][v]["prompt_hash"] for v in VIEWS}
    with JudgmentStore(run_dir, create=False) as jstore:
        rows = jstore.frame()
    current = pd.Series(False, index=rows.index)
    for v in VIEWS:
        current |= (rows["view"] == v) & (rows["prompt_hash"] == hashes[v])
    other_prompts = int((~current).sum())
    rows = rows[current]
    truth = {(int(u), int(i)): str(lab) for u, i, lab in
             zip(labels["user"], labels["item"], labels["label"])}
    raters = []
    disagreements = []
    for (model_id, adapter), sub in rows.groupby(["model_id", "adapter"], sort=True):
        result = _evaluate_rater(sub, truth, labels)
        if result is None:
            continue
        result.update(model_id=model_id, adapter=adapter)
        disagreements += [{"model_id": model_id, "adapter": adapter, **d}
                          for d in result.pop("disagreements")]
        raters.append(result)
    return {
        "run": str(run_dir),
        "audited": int(len(labels) + excluded),
        "evaluated_pairs": int(len(labels)),
        "excluded_finetune_pairs": excluded,
        "finetune_adapters": adapters,
        "simulated": bool(labels["simulated"].astype(bool).all()),
        "simulated_share": float(labels["simulated"].astype(bool).mean()),
        "audit_labels": {lab: int((labels["label"] == lab).sum()) for lab in LABELS},
        "imports": imports,
        "prompt_hashes": hashes,
        "rows_under_other_prompts": other_prompts,
        "raters": raters,
        "disagreements": disagreements,
        "verdict_rule": verdict_rule(run_dir),
    }


def verdict_rule(run_dir: str | Path) -> dict[str, Any] | None:
    """What ``RUN/verdicts.json`` says its rule used (taus, calibration, the stacked model's
    cross-validated figures); ``None`` before the verdicts stage has run."""
    path = Path(run_dir) / COUNTS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("verdict_rule")


def _evaluate_rater(sub, truth: dict, labels) -> dict[str, Any] | None:
    per_view: dict[str, dict] = {}
    got: dict[str, dict[tuple[int, int], tuple]] = {}
    for view in ("user", "item"):
        part = sub[sub["view"] == view]
        got[view] = {(int(u), int(i)): (lab if ok else None, p)
                     for u, i, lab, ok, p in zip(part["user"], part["item"], part["label"],
                                                 part["ok"], part["p_high"])
                     if (int(u), int(i)) in truth}
    if not got["user"] and not got["item"]:
        return None
    for view in ("user", "item"):
        pairs = sorted(got[view])
        per_view[view] = agreement([truth[p] for p in pairs], [got[view][p][0] for p in pairs])
        per_view[view]["not_rated"] = len(truth) - len(pairs)
    both = sorted(set(got["user"]) & set(got["item"]))
    per_view["verdict"] = agreement([audit_verdict(truth[p]) for p in both],
                                    [model_verdict(got["user"][p][0], got["item"][p][0])
                                     for p in both], VERDICT_LABELS)
    per_view["verdict"]["not_rated"] = len(truth) - len(both)
    meta = labels.set_index(["user", "item"])
    dis = []
    for p in sorted(set(got["user"]) | set(got["item"])):
        lu = got["user"].get(p, (None, None))
        li = got["item"].get(p, (None, None))
        verdict = model_verdict(lu[0], li[0]) if p in got["user"] and p in got["item"] else None
        wrong = ((p in got["user"] and lu[0] != truth[p])
                 or (p in got["item"] and li[0] != truth[p])
                 or (verdict is not None and verdict != audit_verdict(truth[p])))
        if wrong:
            row = meta.loc[p]
            dis.append({"user": p[0], "item": p[1], "audit": truth[p],
                        "label_user": _show(lu[0], p in got["user"]),
                        "label_item": _show(li[0], p in got["item"]),
                        "verdict": verdict or ("(failed)" if p in both else "(unrated)"),
                        "audit_verdict": audit_verdict(truth[p]),
                        "p_high_user": _num(lu[1]), "p_high_item": _num(li[1]),
                        "annotator": str(row["annotator"])})
    return {"views": per_view, "disagreements": dis, "n_disagreements": len(dis)}


def _show(label: str | None, rated: bool) -> str:
    if not rated:
        return "(unrated)"
    return label if label is not None else "(failed)"


def _num(x: Any) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x


# ---------------------------------------------------------------------------- files
def write_report(run_dir: str | Path, *, max_listed: int = 30) -> dict[str, Any]:
    """Evaluate and write ``report.md``, ``report.json``, ``confusion.png`` and
    ``disagreements.csv`` under ``RUN/audit/``; returns the figures."""
    import pandas as pd

    result = evaluate(run_dir)
    folder = audit_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    dis = pd.DataFrame(result["disagreements"], columns=[
        "model_id", "adapter", "user", "item", "audit", "label_user", "label_item", "verdict",
        "audit_verdict", "p_high_user", "p_high_item", "annotator"])
    with atomic_path(folder / "disagreements.csv") as tmp:
        dis.to_csv(tmp, index=False)
    if result["raters"]:
        plot_confusions(result, folder / "confusion.png")
    write_json(folder / "report.json", {k: v for k, v in result.items() if k != "disagreements"})
    write_text(folder / "report.md", render_markdown(result, dis, max_listed))
    return result


def plot_confusions(result: dict[str, Any], path: Path) -> None:
    """One row of three confusion matrices (user view, item view, verdict) per rater."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raters = result["raters"]
    fig, axes = plt.subplots(len(raters), 3, figsize=(12, 3.8 * len(raters)), squeeze=False)
    for r, rater in enumerate(raters):
        for c, view in enumerate(("user", "item", "verdict")):
            ax = axes[r][c]
            a = rater["views"][view]
            cm = np.asarray(a["confusion"])
            ax.imshow(cm, cmap="Blues")
            names = a["labels"]
            ax.set_xticks(range(len(names)), names)
            ax.set_yticks(range(len(names)), names)
            ax.set_xlabel("rater")
            ax.set_ylabel("audit")
            for (y, x), v in np.ndenumerate(cm):
                ax.text(x, y, str(v), ha="center", va="center",
                        color="white" if cm.max() and v > cm.max() / 2 else "black")
            title = f"{VIEW_NAMES[view]}\nkappa {_f(a['kappa'])}, n {a['n_labelled']}"
            if c == 0:
                title = f"{_short(rater)}\n" + title
            ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


def _short(rater: dict) -> str:
    return rater["model_id"] if len(rater["model_id"]) < 60 else rater["model_id"][:57] + "..."


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def render_markdown(result: dict[str, Any], dis, max_listed: int = 30) -> str:
    lines = ["# Audit report", ""]
    if result["simulated"]:
        lines += ["**The audited labels are SIMULATED** from MovieLens ratings (>= 4 High, "
                  "3 Medium, <= 2 Low), not given by a person.", ""]
    elif result["simulated_share"] > 0:
        lines += [f"**{result['simulated_share']:.0%} of the audited labels are simulated** "
                  "from ratings.", ""]
    lab = result["audit_labels"]
    lines += [f"Audited pairs: {result['audited']}; evaluated: {result['evaluated_pairs']} "
              f"(High {lab['High']}, Medium {lab['Medium']}, Low {lab['Low']}).",
              f"Left out: {result['excluded_finetune_pairs']} audited pairs that trained an "
              "adapter (held out by pair from every evaluation, whatever the rater).",
              "A kappa is n/a where undefined (one class only). Failed answers (not a label) "
              "are counted and left out of the matrices; accuracy counting them as wrong is "
              "shown too.", ""]
    if result["rows_under_other_prompts"]:
        lines += [f"{result['rows_under_other_prompts']} stored judgments under other prompts "
                  "(older templates or profiles) are not evaluated.", ""]
    if not result["raters"]:
        lines += ["No rater has judged any audited pair yet.", ""]
    for rater in result["raters"]:
        name = rater["model_id"] + (f" (adapter {rater['adapter']})" if rater["adapter"] else "")
        lines += [f"## {name}", "",
                  "| view | n | failed | accuracy [Wilson 95%] | acc. (failures wrong) | "
                  "kappa | weighted kappa | majority baseline (label: accuracy) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for view in ("user", "item", "verdict"):
            a = rater["views"][view]
            lo, hi = a["wilson95"]
            m = a["majority"]
            lines.append(f"| {VIEW_NAMES[view]} | {a['n']} | {a['failed']} | "
                         f"{_f(a['accuracy'])} [{_f(lo)}, {_f(hi)}] | "
                         f"{_f(a['accuracy_counting_failures'])} | {_f(a['kappa'])} | "
                         f"{_f(a['weighted_kappa'])} | {m['label']}: {_f(m['accuracy'])} |")
        lines.append("")
        for view in ("user", "item", "verdict"):
            a = rater["views"][view]
            names = a["labels"]
            lines += [f"Confusion, {VIEW_NAMES[view]} (rows audit, columns rater):", "",
                      "| audit \\ rater | " + " | ".join(names) + " |",
                      "| --- |" + " --- |" * len(names)]
            for t, row in zip(names, a["confusion"]):
                lines.append(f"| {t} | " + " | ".join(str(v) for v in row) + " |")
            lines.append("")
        sub = dis[(dis["model_id"] == rater["model_id"]) & (dis["adapter"] == rater["adapter"])]
        lines += [f"Disagreements: {len(sub)} pairs (all in `disagreements.csv`)"
                  + (f"; the first {max_listed}:" if len(sub) > max_listed else ":"), ""]
        if len(sub):
            lines += ["| user | item | audit | user view | item view | verdict |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for r in sub.head(max_listed).itertuples():
                lines.append(f"| {r.user} | {r.item} | {r.audit} | {r.label_user} | "
                             f"{r.label_item} | {r.verdict} |")
            lines.append("")
    if result["raters"]:
        lines += ["![confusion matrices](confusion.png)", ""]
    lines += llm_share_lines(result.get("verdict_rule"))
    return "\n".join(lines)


def llm_share_lines(info: dict[str, Any] | None) -> list[str]:
    """The verdict rule of ``verdicts.json`` and, for the stacked rule, the LLM's share:
    cross-validated figures of the LLM alone, the non-LLM features alone and both."""
    if not info:
        return []
    lines = ["## Verdict rule", "", f"Rule `{info['rule']}`, calibration `{info['calibration']}`."]
    if "tau" in info:
        tau = info["tau"]
        src = ("target share " + _f(info.get("target_share"), 2)
               if info["tau_source"] == "share" else
               f"best verdict kappa on {info['audits']['usable']} audited pairs (kappa "
               f"{_f(info.get('kappa_in_sample'))} in-sample, "
               f"{_f(info.get('kappa_cross_fitted'))} cross-fitted: taus chosen on the "
               "other folds)")
        lines.append(f"A view says High when {info['score']} >= tau: user view "
                     f"{_f(tau['user'])}, item view {_f(tau['item'])}; taus from {src}. "
                     f"Share of candidates saying High: user "
                     f"{_f(info['realised_share_high']['user'], 2)}, item "
                     f"{_f(info['realised_share_high']['item'], 2)}.")
    lines.append("")
    cv = info.get("cross_validated")
    if not cv:
        return lines
    a = info["audits"]
    lines += ["### The LLM's share", "",
              f"{info['folds']}-fold cross-validation on {a['usable']} audited candidates "
              f"({a['hard']} hard, {a['noisy']} noisy; {a['trained_left_out']} pairs that "
              "trained an adapter left out), class-balanced logistic models, hard iff P >= 0.5.",
              "", "| model | AUC | verdict kappa | accuracy |", "| --- | --- | --- | --- |"]
    names = {"llm": "LLM alone (both views' label probabilities)",
             "non_llm": "non-LLM alone (recommender score, popularity, activity, kind)",
             "stacked": "stacked (both)"}
    for key, name in names.items():
        lines.append(f"| {name} | {_f(cv[key]['auc'])} | {_f(cv[key]['kappa'])} | "
                     f"{_f(cv[key]['accuracy'])} |")
    lines += [f"| argmax rule (both labels High), no fitting | n/a | "
              f"{_f(cv['argmax_rule']['kappa'])} | n/a |", "",
              f"Stacked minus non-LLM: AUC {_f(info['llm_share']['auc_gain_over_non_llm'])}, "
              f"verdict kappa {_f(info['llm_share']['kappa_gain_over_non_llm'])}.", ""]
    if "model" in info:
        lines += [f"The rule uses `{info['model']}`, refitted on every usable audited pair: "
                  f"{info['chosen_by']}.", ""]
    return lines
