"""Tables and plots of a run: printed tables, ``report.md`` and PNG figures.

``write_report(RUN)`` reads only what the pipeline wrote (``results.json``, the train runs'
``history.json``, ``verdicts.parquet``, ``rec_pre/model.pt``, ``align/*.npz``,
``stages/*.json``, ``rating.json``) plus the data, so it can be rerun alone
(``python cli.py report RUN``). Two sections have their own modules: ``alignment.py`` (do the
aligned vectors mix users and items?) and ``cost.py`` (what the LLM costs beside the training);
docs/DESIGN.md, "The alignment picture and the LLM's cost".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmhni_local.audit.records import without_trained_pairs
from llmhni_local.core.io import write_json, write_text
from llmhni_local.eval.metrics import precision_recall_f1
from llmhni_local.eval.stats import auc
from llmhni_local.graph.adjacency import bipartite_adjacency
from llmhni_local.llmhni.candidates import coverage
from llmhni_local.llmhni.text_free import without_text_notes
from llmhni_local.report.alignment import alignment_section
from llmhni_local.report.cost import cost_section
from llmhni_local.train.run import load_trained

# The statistics live with the metrics; their names stay importable from here.


def print_metrics(title: str, result, out: Path | None = None) -> None:
    table = Table(title=title)
    table.add_column("split")
    keys = list(result.test)
    for k in keys:
        table.add_column(k, justify="right")
    table.add_row(f"val (best epoch {result.best_epoch})", *(f"{result.val.get(k, float('nan')):.4f}" for k in keys))
    table.add_row("test", *(f"{result.test[k]:.4f}" for k in keys))
    console = Console()
    console.print(table)
    console.print(f"{result.epochs_run} epochs, {result.epoch_seconds:.2f} s/epoch"
                  + (f"; run folder: {out}" if out else ""))


# ---------------------------------------------------------------------------- identification
def identification(verdicts, data, candidates=None) -> dict[str, Any]:
    """How well the verdicts find the ground truth.

    * ``coverage`` (given the candidates): the share of flagged-noisy training edges that are
      observed candidates at all, the ceiling of any rater's recall below;
    * observed candidates: precision / recall / F1 of the *noisy* verdict against the data's
      noise flags (only pairs with a verdict; failed or unrated pairs are counted apart), and
      the share of flagged pairs among the judged ones (the precision of calling all noisy);
    * unobserved candidates judged hard: the share found in the held-out (validation or test)
      interactions, beside the same share for all unobserved candidates.
    """
    out: dict[str, Any] = {"simulated": bool(verdicts.get("simulated", np.zeros(1)).any())
                           if hasattr(verdicts, "get") else False}
    judged = verdicts[verdicts["verdict"].isin(["hard", "noisy"])]
    out["no_verdict"] = int(len(verdicts) - len(judged))
    if candidates is not None:
        cov = coverage(candidates, data.train, data.train_noise)
        if cov:
            out["coverage"] = cov
    obs = judged[judged["kind"] == "observed"]
    if data.train_noise is not None and len(obs):
        key = data.train[:, 0].astype(np.int64) * data.n_items + data.train[:, 1]
        flag = dict(zip(key.tolist(), data.train_noise.tolist()))
        truth = np.array([flag.get(int(u) * data.n_items + int(i), False)
                          for u, i in zip(obs["user"], obs["item"])])
        pred = (obs["verdict"] == "noisy").to_numpy()
        prf = precision_recall_f1(pred, truth)
        out["observed"] = {**prf, "judged": int(len(obs)), "flagged_share": float(truth.mean())}
    unobs = verdicts[verdicts["kind"] == "unobserved"]
    if len(unobs):
        held = np.concatenate([data.val, data.test])
        held_keys = set((held[:, 0].astype(np.int64) * data.n_items + held[:, 1]).tolist())
        in_held = np.array([int(u) * data.n_items + int(i) in held_keys
                            for u, i in zip(unobs["user"], unobs["item"])])
        hard = (unobs["verdict"] == "hard").to_numpy()
        out["unobserved"] = {
            "candidates": int(len(unobs)), "judged_hard": int(hard.sum()),
            "hard_in_heldout": float(in_held[hard].mean()) if hard.any() else float("nan"),
            "all_in_heldout": float(in_held.mean()),
        }
    return out


# ---------------------------------------------------------------------------- comparisons
def gap_recovered(method: float, bpr: float, oracle: float) -> float:
    """Share of the gap from BPR (no denoising) to the oracle (every flagged edge removed) that
    a method recovers: ``(method - bpr) / (oracle - bpr)``. 1 is the oracle, 0 is BPR,
    negative is worse than BPR; NaN when the oracle is no better than BPR (no gap to recover).

    Example:
        >>> gap_recovered(0.25, 0.0, 0.5), gap_recovered(-0.25, 0.0, 0.5)
        (0.5, -0.5)
    """
    gap = oracle - bpr
    return float((method - bpr) / gap) if gap > 0 else float("nan")


#: Smallest oracle - BPR gap in Recall@20 that a "BPR->oracle" figure is shown for.
GAP_FLOOR = 0.005
GAP_NA = "n/a (gap within noise)"
GAP_RULE = ("BPR->oracle: (method - BPR) / (oracle - BPR) on Recall@20, shown only where the "
            "oracle - BPR gap exceeds both its seed spread (std over seeds of the per-seed "
            f"gap) and {GAP_FLOOR:g}; else {GAP_NA}")


def oracle_gap(bpr: np.ndarray, oracle: np.ndarray, floor: float = GAP_FLOOR) -> dict[str, Any]:
    """Whether the oracle - BPR gap is large enough to place methods on (:func:`gap_recovered`).

    ``bpr`` and ``oracle`` hold one Recall@20 per seed, the same seeds in the same order. The
    gap is the mean of the per-seed gaps, its spread their standard deviation (ddof 1; 0 with
    one seed, where only the floor applies). A gap within its spread or below ``floor`` makes
    every ratio on it noise (a 15-epoch run once printed +65.13), so ``real`` is False there.

    Example:
        >>> oracle_gap([0.20, 0.21], [0.22, 0.23])["real"], oracle_gap([0.20], [0.202])["real"]
        (True, False)
    """
    b, o = np.asarray(bpr, dtype=np.float64), np.asarray(oracle, dtype=np.float64)
    if b.shape != o.shape or b.size == 0:
        raise ValueError(f"oracle_gap: {b.shape} BPR and {o.shape} oracle figures must match "
                         "and hold at least one seed")
    per_seed = o - b
    gap = float(per_seed.mean())
    spread = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0
    return {"gap": gap, "spread": spread, "floor": floor, "seeds": int(len(per_seed)),
            "real": bool(gap > spread and gap > floor)}


# ---------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(run_dir: Path, methods: list[str], path: Path) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for m in methods:
        hist_path = run_dir / "train" / m / "seed{}".format(_first_seed(run_dir, m)) / "history.json"
        if not hist_path.is_file():
            continue
        hist = json.loads(hist_path.read_text())
        ax1.plot([h["epoch"] for h in hist], [h["loss"] for h in hist], label=m)
        ev = [h for h in hist if "val" in h]
        ax2.plot([h["epoch"] for h in ev], [h["val"]["recall@20"] for h in ev], marker=".", label=m)
    ax1.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    ax2.set(xlabel="epoch", ylabel="validation Recall@20", title="Validation Recall@20")
    ax1.legend(), ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _first_seed(run_dir: Path, method: str) -> str:
    seeds = sorted((run_dir / "train" / method).glob("seed*"))
    return seeds[0].name[4:] if seeds else "0"


def plot_score_distribution(scores: np.ndarray, noisy: np.ndarray, path: Path) -> dict:
    """Histogram of Rec_pre's scores of training pairs: flagged noisy vs the rest."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(np.percentile(scores, 0.5), np.percentile(scores, 99.5), 60)
    ax.hist(scores[~noisy], bins=bins, alpha=0.6, density=True, label=f"clean ({(~noisy).sum()})")
    ax.hist(scores[noisy], bins=bins, alpha=0.6, density=True, label=f"flagged noisy ({noisy.sum()})")
    ax.set(xlabel="Rec_pre score <e_u, e_i>", ylabel="density",
           title="Training pairs under the pretrained recommender")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"auc_clean_vs_noisy": auc(scores, ~noisy),  # clean pairs are the positives
            "mean_clean": float(scores[~noisy].mean()), "mean_noisy": float(scores[noisy].mean())}


def plot_identification(verdicts, path: Path) -> None:
    plt = _plt()
    kinds = ["observed", "unobserved"]
    labels = ["hard", "noisy", "failed", "unrated"]
    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = np.zeros(len(kinds))
    for lab in labels:
        vals = np.array([int(((verdicts["kind"] == k) & (verdicts["verdict"] == lab)).sum()) for k in kinds])
        if vals.sum() == 0:
            continue
        ax.bar(kinds, vals, bottom=bottom, label=lab)
        bottom += vals
    ax.set(ylabel="candidate pairs", title="Verdicts by candidate type")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- report.md
def _rec_pre_vectors(run_dir: Path, data) -> tuple[np.ndarray, np.ndarray] | None:
    """Rec_pre's final user and item embeddings (a score is their dot product); None without
    noise flags (nothing to read them against) or without ``rec_pre/model.pt``."""
    if data.train_noise is None or not (run_dir / "rec_pre" / "model.pt").is_file():
        return None
    import torch

    model = load_trained(run_dir / "rec_pre", data)
    with torch.no_grad():
        u, i = model(bipartite_adjacency(data.train, data.n_users, data.n_items))
    return u.numpy(), i.numpy()


def _scorer(vectors: tuple[np.ndarray, np.ndarray] | None):
    """``score_fn(users)``: the users' score rows over every item (None without vectors)."""
    return None if vectors is None else (lambda users: vectors[0][users] @ vectors[1].T)


def results_gap(results: dict) -> dict[str, Any] | None:
    """:func:`oracle_gap` of a results.json (BPR and oracle paired by seed), or None when
    either was not trained."""
    methods = results["methods"]
    if "bpr" not in methods or "oracle" not in methods:
        return None
    per = {m: {s["seed"]: s["test"]["recall@20"] for s in methods[m]["seeds"]}
           for m in ("bpr", "oracle")}
    seeds = [s for s in per["bpr"] if s in per["oracle"]]
    if not seeds:
        return None
    return oracle_gap([per["bpr"][s] for s in seeds], [per["oracle"][s] for s in seeds])


def _row_marks(rater: dict) -> list[str]:
    marks = [rater["tag"]] if rater.get("tag") else []
    return marks + (["constant rater"] if rater.get("constant_note") else [])


def results_table(results: dict) -> list[list[str]]:
    """One row per method (:data:`RESULT_HEADER`); the last column places Recall@20 between
    BPR and the oracle (:func:`gap_recovered`) when both were trained and their gap is more
    than noise (:func:`oracle_gap`; else :data:`GAP_NA`), else "-"."""
    rows = []
    methods = results["methods"]
    rater = results.get("rater") or {}
    marks = _row_marks(rater)
    marked = set(rater.get("methods", ())) if marks else set()
    gap_info = results_gap(results)
    ref = ((methods["bpr"]["recall@20_mean"], methods["oracle"]["recall@20_mean"])
           if gap_info else None)
    for m, r in methods.items():
        n = len(r["seeds"])
        fmt = (lambda k: f"{r[k + '_mean']:.4f} ± {r[k + '_std']:.4f}") if n > 1 else (lambda k: f"{r[k + '_mean']:.4f}")
        gap = gap_recovered(r["recall@20_mean"], *ref) if ref else float("nan")
        gap_cell = ("-" if ref is None else GAP_NA if not gap_info["real"]
                    else "-" if np.isnan(gap) else f"{gap:+.2f}")
        name = f"{m} ({'; '.join(marks)})" if m in marked else m
        rows.append([name, fmt("recall@20"), fmt("ndcg@20"), fmt("recall@10"), fmt("ndcg@10"), str(n),
                     f"{np.mean([s['epoch_seconds'] for s in r['seeds']]):.2f}", gap_cell])
    return rows


RESULT_HEADER = ["method", "Recall@20", "NDCG@20", "Recall@10", "NDCG@10", "seeds", "s/epoch",
                 "BPR->oracle"]


def rater_line(results: dict) -> str:
    """The sentence naming the rater whose verdicts LLMHNI read ('' for a run that did not
    record it)."""
    rater = results.get("rater") or {}
    if not rater.get("description") or rater.get("kind") == "simulated":
        return ""  # the simulated rater has its own banner
    if "methods" in rater and not rater["methods"]:
        return ""  # no method of the run read the verdicts: no rater to name
    marked = ", ".join(rater.get("methods", ())) or "LLMHNI"
    # no rater ran here: say where the verdicts, or the judgments they were decided from, came
    if rater.get("kind") in ("imported", "imported_judgments"):
        return f"Verdicts of {marked}: {rater['description']}."
    constant = ""
    if rater.get("constant_note"):
        views = ", ".join(f"{v} view {c['label']} {c['share']:.1%}"
                          for v, c in (rater.get("constant") or {}).items())
        constant = f" The rater is {rater['constant_note']} ({views})."
    return f"Rater of {marked}: {rater['description']}.{constant}"


def write_report(run_dir: str | Path, data, ran: dict[str, bool] | None = None) -> dict:
    """Write ``RUN/report.md`` and ``RUN/plots/*.png``; returns the figures it shows.

    ``ran`` (stage -> whether it ran, the pipeline's) marks reused stages in the cost table;
    without it the run's ``manifest.json`` does (:func:`~llmhni_local.report.cost.stage_times`).
    """
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    results = json.loads((run_dir / "results.json").read_text())
    simulated = bool(results.get("simulated_rater"))
    out: dict[str, Any] = {}
    lines = [f"# LLMHNI run: {data.name}", "", *(f"**{n}.**\n" for n in without_text_notes(data))]
    if simulated:
        how = (results.get("rater") or {}).get("description") or (
            "SIMULATED rater (reads the ground-truth noise flags and errs at a set rate)")
        lines += [f"**Verdicts from the {how}**: a study of rater quality, not an LLM result.",
                  ""]
    tag = (results.get("rater") or {}).get("tag")
    if rater_line(results):
        lines += [f"**{rater_line(results)}**", ""]
    lines += ["## Clean-test ranking (full ranking, training items masked; test read once at the "
              "best validation epoch)", "",
              "| " + " | ".join(RESULT_HEADER) + " |", "|" + "---|" * len(RESULT_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in results_table(results)]
    if results_gap(results) is not None:
        lines += ["", GAP_RULE + "."]
    plot_curves(run_dir, list(results["methods"]), plots / "training_curves.png")
    lines += ["", "![training curves](plots/training_curves.png)", ""]

    vectors = _rec_pre_vectors(run_dir, data)
    cost_lines, out["cost"] = cost_section(run_dir, data, _scorer(vectors), ran)  # beside training
    align_lines, out["alignment"] = alignment_section(run_dir, plots)
    lines += cost_lines + align_lines
    if vectors is not None:
        e = data.train
        scores = (vectors[0][e[:, 0]] * vectors[1][e[:, 1]]).sum(1)
        dist = plot_score_distribution(scores, data.train_noise.astype(bool),
                                       plots / "score_distribution.png")
        out["score_distribution"] = dist
        lines += ["## Hard and noisy look alike to the recommender", "",
                  f"Rec_pre's scores of training pairs: mean {dist['mean_clean']:.3f} for clean "
                  f"pairs, {dist['mean_noisy']:.3f} for flagged noisy ones; a clean pair outscores "
                  f"a noisy one with probability {dist['auc_clean_vs_noisy']:.3f} (AUC).", "",
                  "![score distribution](plots/score_distribution.png)", ""]

    vpath = run_dir / "verdicts.parquet"
    if vpath.is_file():
        import pandas as pd

        # a tuned rater's own training pairs say nothing about how it identifies noise
        verdicts, left_out = without_trained_pairs(pd.read_parquet(vpath), run_dir)
        cpath = run_dir / "candidates.parquet"
        ident = identification(verdicts, data, pd.read_parquet(cpath) if cpath.is_file() else None)
        ident["left_out_trained_pairs"] = left_out
        out["identification"] = ident
        plot_identification(verdicts, plots / "identification.png")
        lines += ["## Identification of noisy and hard pairs" + (" (simulated rater)" if simulated else "")
                  + (f" ({tag})" if tag else ""), ""]
        if "coverage" in ident:
            c = ident["coverage"]
            lines += [f"Coverage: {c['covered']} of the {c['flagged']} flagged-noisy training "
                      f"edges are observed candidates ({c['coverage']:.3f}); no rater can find "
                      "the others, so the recall below is bounded by this share.", ""]
        if "observed" in ident:
            o = ident["observed"]
            lines += [f"Observed candidates judged: {o['judged']}; 'noisy' verdict against the "
                      f"ground-truth flags: precision {o['precision']:.3f}, recall "
                      f"{o['recall']:.3f}, F1 {o['f1']:.3f} (share flagged among them: "
                      f"{o['flagged_share']:.3f}, the precision of calling every pair noisy).", ""]
        if "unobserved" in ident:
            u = ident["unobserved"]
            lines += [f"Unobserved candidates: {u['candidates']}, judged hard: {u['judged_hard']}; "
                      f"share of those found in held-out interactions: {u['hard_in_heldout']:.3f} "
                      f"(all unobserved candidates: {u['all_in_heldout']:.3f}).", ""]
        lines += [f"Pairs with no verdict (a view failed or is unrated): {ident['no_verdict']}.", "",
                  "![identification](plots/identification.png)", ""]
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    write_json(run_dir / "report.json", out)
    return out


def _console():
    """A rich console; 120 columns when output is not a terminal (a log file or a pipe), where
    rich would assume 80 and cut the column headers."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def print_run_summary(run_dir: str | Path) -> None:
    """The demo's closing table: clean-test metrics per method and identification figures."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())

    sim = " [SIMULATED rater]" if results.get("simulated_rater") else ""
    rater = results.get("rater") or {}
    for mark in (rater.get("tag"), rater.get("constant_note")):
        sim += f" [{mark}]" if mark else ""
    # escaped: rich reads "[lowercase ...]" as a style tag and drops it
    sim = escape(sim)
    caption = " ".join(x for x in (rater_line(results),
                                   GAP_RULE + "." if results_gap(results) else "") if x)
    table = Table(title=f"Clean-test ranking{sim}", caption=escape(caption) or None)
    for h in RESULT_HEADER:
        table.add_column(h, justify="left" if h == "method" else "right", min_width=len(h))
    for row in results_table(results):
        table.add_row(*row)
    console = _console()
    console.print(table)
    rep = run_dir / "report.json"
    if rep.is_file():
        ident = json.loads(rep.read_text()).get("identification", {})
        if "observed" in ident or "coverage" in ident:
            o = ident.get("observed", {})
            cov = ident.get("coverage", {}).get("coverage", float("nan"))
            t = Table(title=f"Noisy-verdict identification on observed candidates{sim}")
            for h in ("coverage", "judged", "precision", "recall", "F1", "flagged share"):
                t.add_column(h, justify="right")
            t.add_row(f"{cov:.3f}", str(o.get("judged", 0)),
                      *(f"{o[k]:.3f}" if k in o else "-"
                        for k in ("precision", "recall", "f1", "flagged_share")))
            console.print(t)
    console.print(f"report: {run_dir / 'report.md'}")
