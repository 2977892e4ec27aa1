"""The paper's comparison: every baseline beside LLMHNI, on the data as given and with 5-20%
added noise, with Drop Rate (docs/BASELINES.md).

For each backbone and noise ratio r (``data.synthetic_noise``; 0 is MovieLens-100K as given,
with its natural noise; r adds random unobserved pairs on top), one run folder
``OUT/<backbone>-noise<r>`` holds two cells that share the data, profiles, embeddings,
alignment and Rec_pre:

1. the **simulated** cell: LLMHNI driven by the SIMULATED perfect rater on a candidate set
   covering >= 80% of the flagged edges (row ``llmhni-sim``: a ceiling, not an LLM result);
2. the **method** cell: every baseline (BPR, WBPR, DNS, T-CE, R-CE, BOD, SGL, SimGCL, XSimGCL,
   RLMRec-Con, RLMRec-Gen), BPR on G', LLMHNI read by the base config's local reader (row
   ``llmhni``) and the oracle. ``--no-llm`` drops the two rows that need the local reader and
   runs the cell with the simulated rater's candidates (no rating at all).

Before the cells, each baseline's own weights are chosen from its ``GRID`` on seed 0's best
validation Recall@20 on the data as given with the first backbone (the test split is not read
for it); the choice then holds for every noise ratio and backbone (``--no-grid``: defaults).
LightGCN runs every ratio; NGCF the data as given (``--ngcf-noise`` adds ratios).

Every figure is a clean-test metric, mean ± std over ``--seeds``; each method against LLMHNI
(local reader) is a paired difference over the same seeds and test users with a 95% bootstrap
interval (``llmhni_local.eval.gains.paired_bootstrap``); Drop Rate(m, r) = 1 - Recall@20(r) /
Recall@20(0), paired by seed (``llmhni_local.eval.gains.drop_rate``). Each train run is kept by
its key (``RUN/train_store``), so a killed bench picks up where it stopped: run it again with
the same flags. Writes docs/BENCHMARKS.md (between markers), docs/comparison_recall.png and
docs/comparison_drop_rate.png, and ends with one JSON line.

    python bench/comparison.py --quick        # LightGCN, noise 0 and 0.2, 1 seed, defaults
    python bench/comparison.py                # the whole comparison, 3 seeds
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import time
from pathlib import Path

import numpy as np
from _common import (
    REPO_ROOT,
    ci_cell,
    docs_command,
    emit_json,
    fail,
    float_list,
    format_table,
    paired,
    per_user,
    print_table,
    run_main,
    written_from,
)
from _records import Records, add_records_arg, pin_rater_dtype, record_key, records_path

BASELINES = ["bpr", "wbpr", "dns", "tce", "rce", "bod", "sgl", "simgcl", "xsimgcl",
             "rlmrec-con", "rlmrec-gen"]
LLM_ROWS = ["bpr-gprime", "llmhni"]  # read the local reader's verdicts
SIM = "llmhni-sim"
NOISE = "0,0.05,0.1,0.15,0.2"
MARK_BEGIN, MARK_END = "<!-- bench/comparison.py:begin -->", "<!-- bench/comparison.py:end -->"

#: Seconds one training takes on MovieLens-100K, LightGCN, demo schedule, on a 2-core AVX2 CPU
#: (s/epoch x epochs to the early stop, measured by ``--quick`` on 2026-12-07,
#: docs/BENCHMARKS.md, "The comparison"). NGCF trains NGCF_FACTOR times as long in all: 2.6x
#: LightGCN's s/epoch, but it early-stops sooner (the 3-seed records on the data as given:
#: 5,182 s of training against 4,144 s). Only the wall-time estimate printed before the bench
#: starts reads them.
COST_S = {"bpr": 60, "wbpr": 35, "dns": 40, "tce": 60, "rce": 70, "bod": 175, "sgl": 105,
          "simgcl": 80, "xsimgcl": 45, "rlmrec-con": 160, "rlmrec-gen": 110, "bpr-gprime": 65,
          "llmhni": 90, SIM: 100, "oracle": 65}
NGCF_FACTOR = 1.25
RECORDS = REPO_ROOT / "bench" / "records" / "comparison.jsonl"
LLM_STAGES_S = 420  # embeddings, alignment, Rec_pre and 1,000 readings per folder (measured)


def grids() -> dict[str, dict[str, tuple]]:
    """Per method, the settings chosen on validation: the baselines' own ``GRID`` and the
    ``[train]`` knob of T-CE, R-CE and SGL."""
    from llmhni_local.baselines import bod, dns, rlmrec, simgcl, wbpr, xsimgcl

    own = {"wbpr": wbpr.GRID, "dns": dns.GRID, "bod": bod.GRID, "simgcl": simgcl.GRID,
           "xsimgcl": xsimgcl.GRID, "rlmrec-con": rlmrec.GRID_CON, "rlmrec-gen": rlmrec.GRID_GEN}
    out = {m: {f"baselines.{m.replace('-', '_')}.{k}": v for k, v in g.items()}
           for m, g in own.items()}
    # T-CE's final drop rate over docs/METHOD.md's 0.05-0.2; R-CE's alpha around its paper's
    # best values; SGL's weight around the demo's 0.01 (chosen on validation) and SGL's 0.1.
    out.update(tce={"train.tce_max_drop": (0.05, 0.1, 0.2)},
               rce={"train.rce_alpha": (0.1, 0.25, 0.5)},
               sgl={"train.ssl_weight": (0.01, 0.05, 0.1)})
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="LightGCN, noise 0 and 0.2, 1 seed, default weights (no grid)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default 3; 1 quick)")
    p.add_argument("--noise", default=None, help=f"noise ratios (default {NOISE}; 0,0.2 quick)")
    p.add_argument("--backbones", default=None,
                   help="lightgcn and/or ngcf (default both; lightgcn with --quick)")
    p.add_argument("--ngcf-noise", default="0", help="noise ratios NGCF runs (default 0)")
    p.add_argument("--methods", default=None, help="a subset of the rows (default all)")
    p.add_argument("--no-grid", action="store_true", help="default weights, no validation grid")
    p.add_argument("--weights", default=None,
                   help="the baselines' weights as a JSON object of dotted settings (or a file "
                        "holding one), instead of the validation grid; e.g. the choices a grid "
                        "run printed")
    add_records_arg(p, RECORDS)
    p.add_argument("--no-llm", action="store_true", help="no local-reader rows (no rating)")
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "ml100k.toml"))
    p.add_argument("--epochs", type=int, default=150, help="train.epochs (early-stopped)")
    p.add_argument("--max-users", type=int, default=0, help="data.max_users (smoke runs)")
    p.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench-comparison"))
    p.add_argument("--estimate", action="store_true", help="print the estimate and stop")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="trainings of a folder run at once, each in its own process with the "
                        "cores shared out (pipeline.jobs; default min(2, cores)); the grid's "
                        "single trainings run one at a time")
    a = p.parse_args(argv)
    a.seeds = a.seeds or (1 if a.quick else 3)
    a.noise = float_list("--noise", a.noise or ("0,0.2" if a.quick else NOISE), lo=0, hi=0.5)
    if 0.0 not in a.noise:
        fail("--noise must include 0 (Drop Rate is measured against the data as given)")
    a.ngcf_noise = float_list("--ngcf-noise", a.ngcf_noise, lo=0, hi=0.5)
    a.backbones = (a.backbones or ("lightgcn" if a.quick else "lightgcn,ngcf")).split(",")
    if set(a.backbones) - {"lightgcn", "ngcf"}:
        fail(f"--backbones: unknown {sorted(set(a.backbones) - {'lightgcn', 'ngcf'})}")
    rows = BASELINES + ([] if a.no_llm else LLM_ROWS) + [SIM, "oracle"]
    a.rows = rows if a.methods is None else a.methods.split(",")
    if set(a.rows) - set(rows):
        fail(f"--methods: unknown {sorted(set(a.rows) - set(rows))} (known: {', '.join(rows)})")
    a.weights = read_weights(a.weights)
    a.records = records_path(a, RECORDS)
    a.grid = not (a.no_grid or a.quick or a.weights)
    if a.jobs < 1:
        fail(f"--jobs must be >= 1, got {a.jobs}")
    return a


def read_weights(text: str | None) -> dict:
    if not text:
        return {}
    src = Path(text).read_text() if Path(text).is_file() else text
    try:
        w = json.loads(src)
    except json.JSONDecodeError as exc:
        fail(f"--weights: not a JSON object or a file holding one ({exc})")
    if not isinstance(w, dict) or not all(isinstance(k, str) and "." in k for k in w):
        fail("--weights: expected an object of dotted settings, e.g. "
             '{"baselines.dns.pool": 5}')
    return w


def cells(args) -> list[tuple[str, float]]:
    return [(b, r) for b in args.backbones
            for r in (args.noise if b == args.backbones[0] else args.ngcf_noise)]


def estimate_s(args) -> float:
    """The bench's wall time if nothing is reused (a resumed bench takes less)."""
    total = 0.0
    for b, _ in cells(args):
        per = sum(COST_S.get(m, 90) for m in args.rows) * args.seeds
        total += per * (NGCF_FACTOR if b == "ngcf" else 1.0) / parallel(args.jobs) + LLM_STAGES_S
    if args.grid:
        total += sum(COST_S[m] * (len(list(itertools.product(*g.values()))) - 1)
                     for m, g in grids().items() if m in args.rows)
    return total


def parallel(jobs: int) -> float:
    """How many times faster a folder's trainings go with ``jobs`` workers: on 2 cores two
    one-thread trainings ran at 2.2 s/epoch each, one two-thread training at 2.1 s/epoch."""
    return 1.0 if jobs <= 1 else 0.95 * min(jobs, os.cpu_count() or 1)


def base_settings(args) -> dict:
    from llmhni_local.core.config import read_toml

    base = {f"{t}.{k}": v for t, tab in read_toml(args.config).items() for k, v in tab.items()}
    base.pop("pipeline.out", None)
    base.update({"train.epochs": args.epochs, "tune.kind": "none",
                 "data.max_users": args.max_users,
                 "pipeline.seeds": list(range(args.seeds)), "pipeline.jobs": args.jobs})
    return pin_rater_dtype(base)


def sim_settings(base: dict, noise: float) -> dict:
    """The simulated perfect rater on candidates covering >= 80% of the flagged edges (shares
    as bench/denoise.py measured them: 0.7 of each user's items natural, 0.4 synthetic)."""
    return {**base, "pipeline.rater": "simulated", "pipeline.simulated_error": 0.0,
            "candidates.k_pos_share": 0.7 if noise == 0 else 0.4, "candidates.k_pos": 0,
            "candidates.k_neg": 0, "candidates.budget": 0}


def cell(settings: dict, out: Path, methods: list[str], records: Records,
         what: dict | None = None) -> dict:
    """Per method, per seed of ``settings``: test, val, cost and per-user Recall@20. Trainings
    found in ``records`` are read from it; the rest run in ``out`` (the pipeline, a chunk of
    ``pipeline.jobs`` methods at a time) and are recorded as each chunk ends."""
    seeds = list(settings["pipeline.seeds"])
    keys = {(m, s): record_key(settings, m, s) for m in methods for s in seeds}
    missing = [m for m in methods if any(records.get(keys[m, s]) is None for s in seeds)]
    jobs = max(1, int(settings.get("pipeline.jobs", 1)))
    for i in range(0, len(missing), jobs):
        chunk = missing[i:i + jobs]
        run_dir = train_chunk(settings, out, chunk)
        for m in chunk:
            for s in seeds:
                records.add(keys[m, s], {**(what or {}), "method": m, "seed": s},
                            read_training(run_dir / "train" / m / f"seed{s}", s))
    return {m: [records.get(keys[m, s]) for s in seeds] for m in methods}


def train_chunk(settings: dict, out: Path, methods: list[str]) -> Path:
    """Run the pipeline for ``methods`` in ``out`` (stages already there are reused)."""
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.settings import load_run_config

    cfg = load_run_config(None, {**settings, "pipeline.out": str(out),
                                 "pipeline.methods": methods})
    return run_pipeline(cfg, progress=False, log=lambda m: print("   ", m, flush=True)).dir


def read_training(d: Path, seed: int) -> dict:
    met = json.loads((d / "metrics.json").read_text())
    return {"seed": seed, "test": met["test"], "val": met["val"],
            "epoch_seconds": met["epoch_seconds"], "epochs": met["epochs_run"],
            "best_epoch": met["best_epoch"], "per_user": per_user(d)}


def choose(args, base: dict, records: Records) -> dict[str, dict]:
    """Each baseline's grid point with the best seed-0 validation Recall@20 (data as given,
    first backbone)."""
    chosen: dict[str, dict] = {}
    folder = Path(args.out) / f"{args.backbones[0]}-noise0"
    settings = {**sim_settings(base, 0.0), "model.name": args.backbones[0],
                "data.synthetic_noise": 0.0, "pipeline.seeds": [0]}
    for m, grid in grids().items():
        if m not in args.rows:
            continue
        tried = []
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            r = cell({**settings, **point}, folder, [m], records,
                     {"grid": True, "backbone": args.backbones[0], "noise": 0.0})[m][0]
            tried.append((r["val"]["recall@20"], point))
            print(f"  grid {m} {point}: val Recall@20 {r['val']['recall@20']:.4f}", flush=True)
        best = max(tried, key=lambda t: t[0])
        chosen[m] = {"point": best[1], "val": best[0],
                     "tried": [[json.dumps(p), v] for v, p in tried]}
    return chosen


def run_all(args) -> dict:
    from llmhni_local.core.progress import progress_bar

    base = base_settings(args)
    records = Records(args.records)
    print(f"comparison: {len(records)} trainings already in {args.records}", flush=True)
    chosen = choose(args, base, records) if args.grid else {}
    points = {k: v for c in chosen.values() for k, v in c["point"].items()}
    points.update(args.weights)
    rows = [m for m in args.rows if m != SIM]
    results: dict = {}
    with progress_bar("comparison", len(cells(args))) as bar:
        for backbone, noise in cells(args):
            folder = Path(args.out) / f"{backbone}-noise{noise:g}"
            common = {**base, **points, "model.name": backbone, "data.synthetic_noise": noise}
            cellres = {}
            what = {"backbone": backbone, "noise": noise}
            if SIM in args.rows:
                print(f"== {backbone}, noise {noise:g}: {SIM}", flush=True)
                cellres[SIM] = cell(sim_settings(common, noise), folder, ["llmhni"], records,
                                    {**what, "row": SIM})["llmhni"]
            if rows:
                print(f"== {backbone}, noise {noise:g}: {', '.join(rows)}", flush=True)
                settings = sim_settings(common, noise) if args.no_llm else common
                cellres.update(cell(settings, folder, rows, records, what))
            results[(backbone, noise)] = cellres
            bar.advance(1)
    return {"results": results, "chosen": chosen, "provenance": records.provenance()}


def label(m: str) -> str:
    names = {"llmhni": "llmhni (local reader)", SIM: "llmhni-sim (simulated rater, ceiling)"}
    return names.get(m, m)


def mean_std(seeds: list[dict], key: str = "recall@20") -> tuple[float, float]:
    v = np.array([s["test"][key] for s in seeds])
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def ms(seeds: list[dict], key: str = "recall@20") -> str:
    m, s = mean_std(seeds, key)
    return f"{m:.4f} ± {s:.4f}" if len(seeds) > 1 else f"{m:.4f}"


def versus(cellres: dict, m: str, ref: str) -> dict | None:
    """``m`` - ``ref`` over the same seeds and users, with its bootstrap interval."""
    if ref not in cellres or m == ref:
        return None
    return paired(cellres[m], cellres[ref], f"{m} and {ref}")


def cell_table(cellres: dict, ref: str) -> list[list]:
    rows = []
    for m, seeds in cellres.items():
        ci = ci_cell(versus(cellres, m, ref))
        rows.append([label(m), ms(seeds), ms(seeds, "ndcg@20"), ci,
                     f"{np.mean([s['epoch_seconds'] for s in seeds]):.2f}",
                     f"{np.mean([s['epochs'] for s in seeds]):.0f}",
                     f"{np.mean([s['best_epoch'] for s in seeds]):.0f}"])
    return rows


def sweep_tables(results: dict, backbone: str, ratios: list[float]) -> tuple[list, list, dict]:
    """Recall@20 per ratio, Drop Rate per ratio > 0, and the curves for the plots."""
    from llmhni_local.eval.gains import drop_rate

    base = results[(backbone, 0.0)]
    recall_rows, drop_rows, curves = [], [], {}
    for m in base:
        if not all(m in results[(backbone, r)] for r in ratios):
            continue
        clean = np.array([s["test"]["recall@20"] for s in base[m]])
        recall_rows.append([label(m)] + [ms(results[(backbone, r)][m]) for r in ratios])
        if (clean <= 0).any():  # a smoke run's method that learnt nothing: no drop to speak of
            continue
        drops = [drop_rate([s["test"]["recall@20"] for s in results[(backbone, r)][m]], clean)
                 for r in ratios if r > 0]
        drop_rows.append([label(m)] + [drop_cell(d) for d in drops])
        curves[m] = {"recall": [mean_std(results[(backbone, r)][m])[0] for r in ratios],
                     "drop": [0.0] + [d["mean"] for d in drops]}
    return recall_rows, drop_rows, curves


def drop_cell(d: dict) -> str:
    """Mean ± std over seeds; one seed has no spread to show."""
    return f"{d['mean']:+.3f}" + (f" ± {d['std']:.3f}" if d["n_seeds"] > 1 else "")


def plot(curves: dict, ratios: list[float], key: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    x = [100 * r for r in ratios]
    colours = plt.get_cmap("tab20")  # 15 rows: the default cycle of 10 would repeat
    for k, (m, c) in enumerate(curves.items()):
        bold = m in ("llmhni", SIM)
        ax.plot(x, c[key], marker="o", lw=2.6 if bold else 1.1,
                color="black" if bold else colours(k % 20),
                ls="--" if m in (SIM, "oracle") else "-", label=label(m))
    ax.set_xlabel("added noise (% of training pairs)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    est = estimate_s(args)
    print(f"comparison: {len(cells(args))} folders, {len(args.rows)} rows, {args.seeds} seeds; "
          f"estimated {est / 3600:.1f} h on a 2-core CPU if nothing is reused", flush=True)
    if args.estimate:
        return {"estimate_s": est}
    t0 = time.perf_counter()
    out = run_all(args)
    seconds = time.perf_counter() - t0
    results, tables, figures = out["results"], [], {"seconds": seconds, "estimate_s": est}
    ref = "llmhni" if "llmhni" in args.rows else SIM
    headers = ["method", "Recall@20", "NDCG@20", f"- {ref} [95% CI]", "s/epoch", "epochs",
               "best epoch"]
    for (backbone, noise), cellres in results.items():
        data = "data as given (natural noise)" if noise == 0 else f"{noise:.0%} added noise"
        title = f"{backbone}, {data}, {args.seeds} seed(s)"
        rows = cell_table(cellres, ref)
        print_table(headers, rows, title)
        tables.append((title, format_table(headers, rows)))
        for m, seeds in cellres.items():
            figures[f"{backbone}/{noise:g}/{m}/recall@20_mean"] = mean_std(seeds)[0]
            figures[f"{backbone}/{noise:g}/{m}/epoch_seconds"] = float(
                np.mean([s["epoch_seconds"] for s in seeds]))
    ratios = [r for r in args.noise]
    if len(ratios) > 1:
        rec, drop, curves = sweep_tables(results, args.backbones[0], ratios)
        h = ["method"] + [f"{r:.0%}" for r in ratios]
        print_table(h, rec, "Recall@20 against added noise")
        print_table(["method"] + h[2:], drop, "Drop Rate = 1 - Recall@20(r) / Recall@20(0)")
        tables += [("Recall@20 against added noise", format_table(h, rec)),
                   ("Drop Rate (mean ± std over seeds)", format_table(["method"] + h[2:], drop))]
        for m, c in curves.items():
            for r, d in zip(ratios[1:], c["drop"][1:]):
                figures[f"drop_rate/{r:g}/{m}"] = d
        docs = REPO_ROOT / "docs" if not args.no_docs else Path(args.out)
        docs.mkdir(parents=True, exist_ok=True)
        plot(curves, ratios, "recall", "test Recall@20", docs / "comparison_recall.png")
        plot(curves, ratios, "drop", "Drop Rate", docs / "comparison_drop_rate.png")
    if out["chosen"]:
        crow = [[m, json.dumps(c["point"]), f"{c['val']:.4f}"] for m, c in out["chosen"].items()]
        print_table(["method", "chosen", "val Recall@20"], crow, "Chosen on validation")
        tables.append(("Weights chosen on seed 0's validation Recall@20 (data as given)",
                       format_table(["method", "chosen", "val Recall@20"], crow)))
        figures["chosen"] = {m: c["point"] for m, c in out["chosen"].items()}
    if not args.no_docs:
        write_docs(tables, seconds, len(ratios) > 1, out["provenance"])
    result = {"bench": "comparison", "quick": args.quick, "seeds": args.seeds, **figures}
    emit_json(result)
    return result


def write_docs(tables: list[tuple[str, str]], seconds: float, plots: bool,
               provenance: str) -> None:
    path = REPO_ROOT / "docs" / "BENCHMARKS.md"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    cmd = docs_command("comparison.py")
    body = "\n\n".join(f"{title}:\n\n{table}" for title, table in tables)
    block = (f"{MARK_BEGIN}\n## The comparison (`{cmd}`)\n\n"
             f"{written_from(provenance, seconds)} Clean-test metrics "
             "(full ranking, training items masked, test read once at the best validation "
             "epoch); s/epoch excludes validation.\n\n" + body
             + ("\n\n![Recall@20 against noise](comparison_recall.png)\n\n"
                "![Drop Rate against noise](comparison_drop_rate.png)\n" if plots else "\n")
             + MARK_END)
    if MARK_BEGIN in text:
        text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    run_main(lambda: main(parse_args()))
