"""Denoising benchmark: baselines, the oracle, LLMHNI with a simulated and a local LLM rater.

For each scenario (natural noise; 10% and 20% synthetic noise, i.e. random unobserved pairs
added to training and flagged) and backbone (LightGCN; NGCF without ``--quick``), in one run
folder ``runs/bench-denoise/<scenario>-<backbone>`` (so both cells share the data, profiles,
embeddings, alignment and Rec_pre; train runs are kept by key, so neither retrains the other's):

1. simulated cell: BPR, T-CE, R-CE, SGL, the **oracle** (BPR with every flagged edge removed)
   and LLMHNI with its ablation without denoising (the other three too without ``--quick``),
   driven by the SIMULATED rater at error 0, on a candidate set that covers most flagged edges
   (``--share``, per-user share of training items). Then LLMHNI alone for each simulated error
   rate and each smaller share (the budget curve); every other stage and method is reused.
2. LLM cell: LLMHNI (no ablations) with the local LLM rater on the base config's candidate
   budget (rating is the cost), skipped with ``--no-llm``. On natural noise the rater is the
   base config's probe, tuned in the run on simulated audit labels (``[tune]``; rows
   ``llmhni-llm-probe``); on synthetic noise, whose injected pairs have no rating to simulate
   a label from, zero-shot (``llmhni-llm-zeroshot``); with ``--adapter``, that LoRA adapter
   (``llmhni-llm-lora``).

3. value of the rater (natural and 20% synthetic noise, the run's first backbone; skipped with
   ``--no-auc-curve``): LLMHNI against the SIMULATED rater graded by AUC (``--aucs``,
   ``pipeline.simulated_auc``: binormal scores, a threshold at the true share of clean pairs
   among the observed candidates, ``verdicts.rule = "threshold"``), at the main share
   (coverage >= 0.8) and at the base config's candidate budget (the demo's coverage), over
   ``--auc-seeds`` seeds, beside LLMHNI without denoising, BPR and the oracle, with each
   ``--assess`` file's measured AUCs marked; and the **break-even AUC** (the lowest AUC at
   which LLMHNI with the rater matches LLMHNI without denoising, interpolated between grid
   points) with a 1,000-resample bootstrap interval over users. BPR on G' is no row of the
   method table, so it is not drawn. Every AUC point changes the verdicts only.

Before the seeds are trained, each simulated cell chooses LLMHNI's similarity threshold
quantile and contrastive weight on seed 0's validation Recall@20 (``--quantiles``,
``--contrast``); the test split is not read for it. ``--quick`` tries the default quantile
0.75 only (chosen over 0.5 and 0.9 in every cell of the 3-seed run, docs/BENCHMARKS.md).

Every figure is a clean-test metric, mean ± std over ``--seeds``; LLMHNI against each baseline
is a paired difference over the same seeds with a 95% bootstrap-over-users interval
(``llmhni_local.report.paired_bootstrap``). The BPR -> oracle column is shown only where the
oracle - BPR gap exceeds its seed spread and 0.005 (``llmhni_local.report.oracle_gap``).
Writes ``docs/BENCHMARKS.md`` (between markers), ``docs/denoise_curves.png``,
``docs/value_of_rater.png`` and ends with one JSON line.

    python bench/denoise.py --quick            # natural + synthetic20, LightGCN, 1 seed
    python bench/denoise.py --seeds 3          # the full grid
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, docs_command, emit_json, fail, float_list, format_table, print_table

BASELINES = ["bpr", "tce", "rce", "sgl"]
ABLATIONS = ["llmhni-no-semneg", "llmhni-no-align", "llmhni-no-denoise", "llmhni-no-hal"]
SCENARIOS = {"natural": 0.0, "synthetic10": 0.1, "synthetic20": 0.2}
BACKBONES = ["lightgcn", "ngcf"]
# The control that says how much of LLMHNI's gain is the denoised graph (docs/DESIGN.md).
QUICK_ABLATIONS = ["llmhni-no-denoise"]
MARK_BEGIN, MARK_END = "<!-- bench/denoise.py:begin -->", "<!-- bench/denoise.py:end -->"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="natural + 20%% synthetic noise, LightGCN, one ablation (no denoising)")
    p.add_argument("--backbones", default=None,
                   help="comma-separated subset of lightgcn, ngcf (default: lightgcn with "
                        "--quick, both without)")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per cell (>= 1)")
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "ml100k.toml"),
                   help="base pipeline settings")
    p.add_argument("--share", type=float, default=None,
                   help="candidates.k_pos_share of the simulated cells (default: 0.7 natural, "
                        "0.4 synthetic: both cover >= 80%% of the flagged edges)")
    p.add_argument("--errors", default=None, help="simulated error rates, comma-separated")
    p.add_argument("--shares", default=None, help="smaller shares for the budget curve")
    p.add_argument("--epochs", type=int, default=200,
                   help="train.epochs, an upper bound: every method early-stops on validation "
                        "(at 100 the oracle and uniform-negative LLMHNI were still rising)")
    p.add_argument("--contrast", default="0,0.01",
                   help="LLMHNI's contrastive weights tried (lambda_de = lambda_hal = w), "
                        "chosen per cell on seed 0's best validation Recall@20")
    p.add_argument("--quantiles", default=None,
                   help="LLMHNI's similarity threshold quantiles tried (llmhni.threshold_quantile), "
                        "chosen per cell with the contrastive weight (default 0.5,0.75,0.9; "
                        "0.75 with --quick)")
    p.add_argument("--adapter", default=None, help="LoRA adapter for the rater (rater.adapter)")
    p.add_argument("--no-llm", action="store_true", help="skip the LLM-rater rows")
    p.add_argument("--scenarios", default=None,
                   help="comma-separated subset of natural, synthetic10, synthetic20")
    p.add_argument("--aucs", default="0.5,0.6,0.7,0.8,0.9,1.0",
                   help="simulated rater AUCs of the value-of-rater curve, in [0.5, 1]")
    p.add_argument("--auc-seeds", type=int, default=None,
                   help="training seeds of the value-of-rater curve and its references "
                        "(default 3; 1 with --quick)")
    p.add_argument("--auc-scenarios", default="natural,synthetic20",
                   help="scenarios that draw the value-of-rater curve (of those run)")
    p.add_argument("--no-auc-curve", action="store_true", help="skip the value-of-rater curve")
    p.add_argument("--assess", nargs="+", default=[], metavar="FILE",
                   help="assess.json files of local raters (`rater assess`): their measured "
                        "AUCs are marked on the value-of-rater axis")
    p.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench-denoise"))
    p.add_argument("--no-docs", action="store_true",
                   help="do not write docs/ (the plots then go to --out)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        fail("--seeds must be >= 1 (the seed list would be empty)")
    if args.scenarios is not None:
        unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
        if unknown or not args.scenarios:
            fail(f"--scenarios: unknown {sorted(unknown)} (known: {', '.join(SCENARIOS)})")
    if args.backbones is not None:
        unknown = set(args.backbones.split(",")) - set(BACKBONES)
        if unknown or not args.backbones:
            fail(f"--backbones: unknown {sorted(unknown)} (known: {', '.join(BACKBONES)})")
    if args.share is not None and not 0 < args.share <= 1:
        fail(f"--share must be in (0, 1], got {args.share}")
    float_list("--contrast", args.contrast, lo=0)
    if args.quantiles is None:
        args.quantiles = "0.75" if args.quick else "0.5,0.75,0.9"
    float_list("--quantiles", args.quantiles, lo=0, hi=1)
    args.auc_grid = sorted(set(float_list("--aucs", args.aucs, lo=0.5, hi=1)))
    if args.auc_seeds is None:
        args.auc_seeds = 1 if args.quick else 3
    if args.auc_seeds < 1:
        fail("--auc-seeds must be >= 1 (the seed list would be empty)")
    unknown = set(args.auc_scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        fail(f"--auc-scenarios: unknown {sorted(unknown)} (known: {', '.join(SCENARIOS)})")
    args.raters = read_assess(args.assess)
    return args


def read_assess(paths: list[str]) -> list[dict]:
    """Each ``assess.json``'s name and measured AUCs per task (``natural``, ``synthetic``) and
    view (``user``, ``item``, ``both``), read defensively: the file's layout belongs to
    ``rater assess`` (``views.V.TASK.auc``, or ``views.V.auc_TASK``; ``both_views.TASK.auc``),
    and an AUC it does not hold is simply not marked."""
    raters = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            fail(f"--assess {path}: not a readable JSON file ({exc})")
        if not isinstance(doc, dict):
            fail(f"--assess {path}: expected a JSON object (an assess.json)")
        views = doc.get("views") if isinstance(doc.get("views"), dict) else {}
        aucs: dict[str, dict[str, float]] = {}
        for task in ("natural", "synthetic"):
            for view in ("user", "item"):
                v = views.get(view) if isinstance(views.get(view), dict) else {}
                x = v.get(task, {}).get("auc") if isinstance(v.get(task), dict) else None
                x = v.get(f"auc_{task}") if x is None else x
                if isinstance(x, (int, float)) and np.isfinite(x):
                    aucs.setdefault(task, {})[view] = float(x)
            both = (doc.get("both_views") or {}).get(task) if isinstance(
                doc.get("both_views"), dict) else None
            if isinstance(both, dict) and isinstance(both.get("auc"), (int, float)):
                aucs.setdefault(task, {})["both"] = float(both["auc"])
        rater = doc.get("rater") if isinstance(doc.get("rater"), dict) else {}
        name = rater.get("name") or rater.get("model_id") or Path(path).parent.name or path
        constant = doc.get("constant")  # the views it names constant (a list), or a flag
        constant = (set(map(str, constant)) if isinstance(constant, list)
                    else {"user", "item", "both"} if constant is True else set())
        raters.append({"name": str(name).split("@")[0], "file": str(path), "aucs": aucs,
                       "constant": constant})
        if not aucs:
            print(f"note: --assess {path}: no AUC found (views.V.TASK.auc); nothing marked",
                  flush=True)
    return raters


def _floats(text: str | None, default: list[float]) -> list[float]:
    return default if text is None else [float(x) for x in text.split(",") if x.strip()]


def base_settings(config: str, seeds: int, epochs: int) -> dict:
    """The base config file as dotted settings, with the bench's seeds and epoch bound."""
    from llmhni_local.core.config import read_toml

    base = {f"{t}.{k}": v for t, table in read_toml(config).items() for k, v in table.items()}
    base.pop("pipeline.out", None)
    base["pipeline.seeds"] = list(range(seeds))
    base["train.epochs"] = epochs
    return base


def cell_settings(base: dict, noise: float, backbone: str, share: float | None = None) -> tuple[dict, dict]:
    """``(common, sim)``: a scenario's settings, and those of its simulated cell (a candidate
    set of ``share`` of each user's training items; default 0.7 natural, 0.4 synthetic)."""
    share = share if share is not None else (0.7 if noise == 0 else 0.4)
    # No in-run tuning here: the simulated cells need none (the natural LLM cell turns the
    # base config's tuning back on, run_scenario).
    common = {**base, "data.synthetic_noise": noise, "model.name": backbone, "tune.kind": "none"}
    sim = {**common, "pipeline.rater": "simulated", "candidates.k_pos_share": share,
           "candidates.k_pos": 0, "candidates.k_neg": 0, "candidates.budget": 0}
    return common, sim


TRAININGS = {"trained": 0, "reused": 0}  # train runs of this invocation (for the time table)


def _log(message: str) -> None:
    print("   ", message, flush=True)
    if re.match(r"\[train\] \S+ seed \d+", message):  # not the stage's running / done lines
        TRAININGS["reused" if "reused" in message else "trained"] += 1
    elif message.startswith("[rec_pre] running"):
        TRAININGS["trained"] += 1


def cell(base: dict, out: Path, **overrides) -> dict:
    """Run the pipeline in ``out``; returns results, identification and the run folder."""
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.settings import load_run_config

    cfg = load_run_config(None, {**base, "pipeline.out": str(out), **overrides})
    run = run_pipeline(cfg, progress=False, log=_log)
    results = json.loads((run.dir / "results.json").read_text())["methods"]
    rpath = run.dir / "report.json"
    report = json.loads(rpath.read_text()) if rpath.is_file() else {}
    return {"methods": results, "identification": report.get("identification", {}),
            "dir": run.dir, "seeds": list(cfg.pipeline.seeds)}


def per_user(run_dir: Path, method: str, seeds: list[int], metric: str = "recall@20") -> tuple:
    """``(users, (seeds, users) array)`` of a method's per-user test metric."""
    from llmhni_local.train.run import load_per_user_test

    rows, users = [], None
    for s in seeds:
        d = load_per_user_test(run_dir / "train" / method / f"seed{s}")
        if users is not None and not np.array_equal(users, d["users"]):
            raise RuntimeError(f"{run_dir}: {method} seed {s} was tested on other users")
        users = d["users"]
        rows.append(d[metric])
    return users, np.stack(rows)


def compare(a_dir: Path, a: str, b_dir: Path, b: str, seeds: list[int]) -> dict:
    from llmhni_local.eval.gains import paired_bootstrap

    ua, va = per_user(a_dir, a, seeds)
    ub, vb = per_user(b_dir, b, seeds)
    if not np.array_equal(ua, ub):
        raise RuntimeError(f"{a} and {b} were tested on different users")
    return paired_bootstrap(va, vb, n_boot=2000, seed=0)


def _ms(r: dict, key: str = "recall@20") -> str:
    m, s = r[f"{key}_mean"], r[f"{key}_std"]
    return f"{m:.4f} ± {s:.4f}" if len(r["seeds"]) > 1 else f"{m:.4f}"


def _put(figs: dict, prefix: str, r: dict) -> None:
    for k in ("recall@20", "ndcg@20"):
        figs[f"{prefix}/{k}_mean"] = r[f"{k}_mean"]
        figs[f"{prefix}/{k}_std"] = r[f"{k}_std"] if len(r["seeds"]) > 1 else None


def _gap_cell(value: float, gap: dict | None, bpr: float, oracle: float) -> str:
    """The BPR->oracle figure of ``value``, or n/a where the gap is within noise
    (``llmhni_local.report.oracle_gap``; a 15-epoch run once printed +65.13)."""
    from llmhni_local.report import GAP_NA, gap_recovered

    if gap is None:
        return "-"
    return f"{gap_recovered(value, bpr, oracle):+.2f}" if gap["real"] else GAP_NA


def run_scenario(args, base: dict, scen: str, noise: float, backbone: str, out: dict) -> None:
    """One scenario x backbone: the simulated cell, its error and budget curves, the
    value-of-rater curve, the LLM cell."""
    from llmhni_local.report import gap_recovered, results_gap

    tag, figs = f"{scen}/{backbone}", out["figures"]
    common, sim = cell_settings(base, noise, backbone, args.share)
    share = sim["candidates.k_pos_share"]
    main_methods = BASELINES + ["oracle", "llmhni"] + (QUICK_ABLATIONS if args.quick else ABLATIONS)
    sdir = Path(args.out) / f"{scen}-{backbone}"
    chosen = choose_settings(args, sim, sdir, tag, out)
    sim.update(chosen)
    print(f"== {tag}: {', '.join(main_methods)} (simulated rater, error 0, share {share})", flush=True)
    res = cell(sim, sdir, **{"pipeline.methods": main_methods, "pipeline.simulated_error": 0.0})
    m, seeds = res["methods"], res["seeds"]
    cov = res["identification"].get("coverage", {}).get("coverage", float("nan"))
    figs[f"{tag}/coverage"] = cov
    bpr, oracle = m["bpr"]["recall@20_mean"], m["oracle"]["recall@20_mean"]
    gap = results_gap({"methods": m})
    figs[f"{tag}/oracle_gap"], figs[f"{tag}/oracle_gap_spread"] = gap["gap"], gap["spread"]
    for name in main_methods:
        label = "llmhni-sim0" if name == "llmhni" else name
        _put(figs, f"{tag}/{label}", m[name])
        out["rows"].append([scen, backbone, label, _ms(m[name]), _ms(m[name], "ndcg@20"),
                            _gap_cell(m[name]["recall@20_mean"], gap, bpr, oracle)])
    figs[f"{tag}/llmhni-sim0/gap_recovered"] = (
        gap_recovered(m["llmhni"]["recall@20_mean"], bpr, oracle) if gap["real"] else None)
    for b in BASELINES + ["oracle"] + [x for x in main_methods if x in ABLATIONS]:
        c = compare(sdir, "llmhni", sdir, b, seeds)
        for k in ("diff", "lo", "hi"):
            figs[f"{tag}/llmhni-sim0-vs-{b}/recall@20_{k}"] = c[k]
        out["pairs"].append([scen, backbone, f"llmhni (sim 0) - {b}", f"{c['diff']:+.4f}",
                             f"[{c['lo']:+.4f}, {c['hi']:+.4f}]"])
    out["curve"].append({"scen": scen, "backbone": backbone, "bpr": bpr, "oracle": oracle,
                         "errors": {0.0: m["llmhni"]["recall@20_mean"]},
                         "shares": {share: (cov, m["llmhni"]["recall@20_mean"])}})
    _curves(args, sim, sdir, tag, out)
    if (not args.no_auc_curve and scen in args.auc_scenarios.split(",")
            and backbone == out["first_backbone"]):
        _value_of_rater(args, base, sim, sdir, tag, out)
    if not args.no_llm:
        llm = {**common, **chosen}
        # Natural noise has MovieLens ratings to simulate audit labels from, so its LLM cell
        # rates with the base config's tuned probe (the toolkit's best rater without audits
        # by people); synthetic pairs have none, so those cells rate zero-shot.
        if noise == 0 and not args.adapter and base.get("tune.kind", "none") != "none":
            llm["tune.kind"] = base["tune.kind"]
        _llm_cell(args, llm, sdir, scen, backbone, bpr, oracle, gap, out)


def choose_settings(args, sim: dict, sdir: Path, tag: str, out: dict) -> dict:
    """LLMHNI's similarity threshold quantile and contrastive weight for this cell, by seed 0's
    best validation Recall@20 (simulated rater at error 0); test figures are not looked at.

    A coordinate search: each quantile of ``--quantiles`` at the base contrastive weight, then
    each other weight of ``--contrast`` at the best quantile (one weight for both terms; ties:
    the earlier candidate)."""
    quantiles, weights = _floats(args.quantiles, []), _floats(args.contrast, [])
    w0 = sim.get("llmhni.lambda_de", weights[0])
    w0 = w0 if w0 in weights else weights[0]
    if len(quantiles) == 1 and len(weights) == 1:
        return _llmhni_choice(quantiles[0], weights[0])
    val: dict[tuple[float, float], float] = {}

    def trial(q: float, w: float) -> None:
        print(f"== {tag}: choosing LLMHNI's settings: quantile {q:g}, weight {w:g}, seed 0",
              flush=True)
        r = cell({**sim, "pipeline.seeds": [0], **_llmhni_choice(q, w)}, sdir,
                 **{"pipeline.methods": ["llmhni"], "pipeline.simulated_error": 0.0})
        val[(q, w)] = r["methods"]["llmhni"]["seeds"][0]["val"]["recall@20"]

    for q in quantiles:
        trial(q, w0)
    q_best = max(quantiles, key=lambda q: val[(q, w0)])
    for w in weights:
        if w != w0:
            trial(q_best, w)
    best = max(val, key=val.get)  # dicts keep insertion order: ties go to the earlier trial
    out["figures"][f"{tag}/llmhni/threshold_quantile"] = best[0]
    out["figures"][f"{tag}/llmhni/contrast_weight"] = best[1]
    out["choices"].append([tag, "; ".join(f"q {q:g}, w {w:g}: {v:.4f}" for (q, w), v in val.items()),
                           f"q {best[0]:g}, w {best[1]:g}"])
    return _llmhni_choice(*best)


def _llmhni_choice(q: float, w: float) -> dict:
    return {"llmhni.threshold_quantile": q, "llmhni.lambda_de": w, "llmhni.lambda_hal": w}


def _curves(args, sim: dict, sdir: Path, tag: str, out: dict) -> None:
    """LLMHNI alone at each simulated error (main share) and each smaller share (error 0)."""
    curve, figs = out["curve"][-1], out["figures"]
    errors = _floats(args.errors, [0.2] if args.quick else [0.1, 0.2, 0.3, 0.4])
    for e in errors:
        print(f"== {tag}: llmhni, SIMULATED rater error {e}", flush=True)
        r = cell(sim, sdir, **{"pipeline.methods": ["llmhni"], "pipeline.simulated_error": e})
        rr = r["methods"]["llmhni"]
        curve["errors"][e] = rr["recall@20_mean"]
        _put(figs, f"{tag}/llmhni-sim{e:g}", rr)
        c = compare(sdir, "llmhni", sdir, "bpr", r["seeds"])
        figs[f"{tag}/llmhni-sim{e:g}-vs-bpr/recall@20_diff"] = c["diff"]
        out["sim_rows"].append([tag, f"error {e:g}", _ms(rr), f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]"])
    main_share = sim["candidates.k_pos_share"]
    for s in _floats(args.shares, [0.05] if args.quick else [0.05, 0.1, 0.2, 0.4]):
        if s >= main_share:
            continue
        print(f"== {tag}: llmhni, SIMULATED rater error 0, share {s}", flush=True)
        r = cell({**sim, "candidates.k_pos_share": s}, sdir,
                 **{"pipeline.methods": ["llmhni"], "pipeline.simulated_error": 0.0})
        cov = r["identification"].get("coverage", {}).get("coverage", float("nan"))
        rr = r["methods"]["llmhni"]
        curve["shares"][s] = (cov, rr["recall@20_mean"])
        figs[f"{tag}/llmhni-share{s:g}/coverage"] = cov
        _put(figs, f"{tag}/llmhni-share{s:g}", rr)
        out["sim_rows"].append([tag, f"share {s:g} (coverage {cov:.2f})", _ms(rr), "-"])


def _value_of_rater(args, base: dict, sim: dict, sdir: Path, tag: str, out: dict) -> None:
    """LLMHNI against the SIMULATED rater's AUC at the main share and at the base config's
    candidate budget, over ``--auc-seeds``; references and the break-even AUC.

    Each coverage first runs the simulated rater at error 0 (the main cell's settings, so its
    runs come back from the train store): it gives the share of flagged pairs among the
    observed candidates, and the rater's threshold keeps ``1 - that share`` (so AUC 1 gives
    exactly the error-0 verdicts). LLMHNI without denoising, BPR and the oracle are the main
    cell's at the curve's seeds; G' = G there, so the reference holds for either coverage."""
    from llmhni_local.eval.gains import break_even

    seeds, figs = list(range(args.auc_seeds)), out["figures"]
    refs = ["bpr", "oracle", "llmhni-no-denoise", "llmhni"]
    print(f"== {tag}: value of the rater: references at seeds {seeds}", flush=True)
    ref = cell({**sim, "pipeline.seeds": seeds}, sdir,
               **{"pipeline.methods": refs, "pipeline.simulated_error": 0.0})
    users, nd = per_user(sdir, "llmhni-no-denoise", seeds)
    nd_user = nd.mean(axis=0)
    m = ref["methods"]
    entry = {"tag": tag, "seeds": seeds, "no_denoise": m["llmhni-no-denoise"]["recall@20_mean"],
             "bpr": m["bpr"]["recall@20_mean"], "oracle": m["oracle"]["recall@20_mean"],
             "curves": []}
    for k in ("bpr", "oracle", "llmhni-no-denoise"):
        _put(figs, f"{tag}/value_of_rater/{k}", m[k])
    # the base config's candidates (the demo's budget): the cell's candidate settings dropped
    demo = {**{k: v for k, v in sim.items() if not k.startswith("candidates.")},
            **{k: v for k, v in base.items() if k.startswith("candidates.")}}
    for label, settings in (("main", sim), ("demo", demo)):
        if label == "main":
            r0 = ref
        else:
            print(f"== {tag}: value of the rater at the base config's candidates: error 0",
                  flush=True)
            r0 = cell({**settings, "pipeline.seeds": seeds}, sdir,
                      **{"pipeline.methods": ["llmhni"], "pipeline.simulated_error": 0.0})
        ident = r0["identification"]
        cov = ident.get("coverage", {}).get("coverage", float("nan"))
        keep = 1.0 - ident["observed"]["flagged_share"]  # the true share of clean candidates
        curve = {"label": label, "coverage": cov, "keep": keep, "aucs": [], "mean": [],
                 "std": [], "realised": [], "error0": r0["methods"]["llmhni"]["recall@20_mean"]}
        per = []
        # AUC 1 thresholded at the true share gives these very verdicts (tested), so the
        # two rows should agree: a check of the curve's top end
        out["auc_rows"].append([tag, f"{label} ({cov:.2f})", "error 0", "-",
                                _ms(r0["methods"]["llmhni"]),
                                f"{curve['error0'] - entry['no_denoise']:+.4f}"])
        for a in args.auc_grid:
            print(f"== {tag}: llmhni, SIMULATED rater AUC {a:g}, coverage {cov:.2f}, "
                  f"threshold keeps {keep:.3f}", flush=True)
            r = cell({**settings, "pipeline.seeds": seeds, "verdicts.rule": "threshold",
                      "verdicts.tau_source": "share", "verdicts.target_share": keep,
                      "verdicts.calibration": "none"}, sdir,
                     **{"pipeline.methods": ["llmhni"], "pipeline.simulated_auc": a})
            u, v = per_user(sdir, "llmhni", seeds)  # read now: the next AUC overwrites it
            if not np.array_equal(u, users):
                raise RuntimeError(f"{tag}: AUC {a:g} was tested on other users")
            per.append(v.mean(axis=0))
            rr = r["methods"]["llmhni"]
            realised = json.loads((r["dir"] / "verdicts.json").read_text()).get("realised_auc")
            curve["aucs"].append(a)
            curve["mean"].append(rr["recall@20_mean"])
            curve["std"].append(rr["recall@20_std"] if len(seeds) > 1 else 0.0)
            curve["realised"].append(realised)
            key = f"{tag}/value_of_rater/{label}/auc{a:g}"
            _put(figs, key, rr)
            figs[f"{key}/realised_auc"] = realised
            out["auc_rows"].append([tag, f"{label} ({cov:.2f})", f"{a:g}",
                                    "-" if realised is None else f"{realised:.3f}", _ms(rr),
                                    f"{rr['recall@20_mean'] - entry['no_denoise']:+.4f}"])
        be = break_even(np.array(curve["aucs"]), np.stack(per), nd_user, n_boot=1000, seed=0)
        curve["break_even"] = be
        for k in ("x", "lo", "hi"):
            figs[f"{tag}/value_of_rater/{label}/break_even_auc" + ("" if k == "x" else f"_{k}")] = (
                be[k] if np.isfinite(be[k]) else None)
        figs[f"{tag}/value_of_rater/{label}/coverage"] = cov
        figs[f"{tag}/value_of_rater/{label}/keep_share"] = keep
        out["break_even_rows"].append([
            tag, f"{label} ({cov:.2f})", f"{entry['no_denoise']:.4f}", f"{entry['bpr']:.4f}",
            f"{entry['oracle']:.4f}", _auc_text(be["x"], be["at_grid_start"], args.auc_grid),
            f"[{_auc_text(be['lo'], False, args.auc_grid)}, "
            f"{_auc_text(be['hi'], False, args.auc_grid)}]", f"{be['unreached_share']:.3f}"])
        entry["curves"].append(curve)
    out["auc_curves"].append(entry)


def _auc_text(x: float, at_start: bool, grid: list[float]) -> str:
    if not np.isfinite(x):
        return f"not reached (> {max(grid):g})"
    return f"<= {x:g}" if at_start else f"{x:.3f}"


def _llm_cell(args, common: dict, sdir: Path, scen: str, backbone: str, bpr: float,
              oracle: float, gap: dict, out: dict) -> None:
    tag, figs = f"{scen}/{backbone}", out["figures"]
    print(f"== {tag}: llmhni with the LLM rater (base config's candidates)", flush=True)
    # LLMHNI alone: its ablations are studied in the simulated cell, where the judgments reach
    # the noise; at this budget they would retrain the sampler's effect 12 times per cell.
    methods = ["llmhni"]
    r = cell(common, sdir, **{"pipeline.methods": methods, "pipeline.rater": "llm"})
    ident = r["identification"]
    figs[f"{tag}/llm/coverage"] = ident.get("coverage", {}).get("coverage")
    if "observed" in ident:
        figs[f"{tag}/llm/noisy_f1"] = ident["observed"]["f1"]
    kind = "probe" if common.get("tune.kind", "none") != "none" else (
        "lora" if args.adapter else "zeroshot")
    for name in methods:
        rr = r["methods"][name]
        label = name.replace("llmhni", f"llmhni-llm-{kind}", 1)
        _put(figs, f"{tag}/{label}", rr)
        out["rows"].append([scen, backbone, label, _ms(rr), _ms(rr, "ndcg@20"),
                            _gap_cell(rr["recall@20_mean"], gap, bpr, oracle)])


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, c in enumerate(out["curve"]):
        color = f"C{i}"
        label = f"{c['scen']}/{c['backbone']}"
        e = sorted(c["errors"])
        ax1.plot(e, [c["errors"][x] for x in e], marker="o", color=color, label=f"{label} LLMHNI")
        s = sorted(c["shares"].values())
        ax2.plot([x[0] for x in s], [x[1] for x in s], marker="o", color=color, label=f"{label} LLMHNI")
        for ax in (ax1, ax2):
            ax.axhline(c["bpr"], color=color, ls=":", lw=1)
            ax.axhline(c["oracle"], color=color, ls="--", lw=1)
    ax1.set(xlabel="simulated rater error rate", ylabel="clean-test Recall@20",
            title="LLMHNI vs rater error (dotted: BPR, dashed: oracle)")
    ax2.set(xlabel="coverage (share of flagged edges that are candidates)",
            ylabel="clean-test Recall@20", title="LLMHNI vs candidate coverage (error 0)")
    ax1.legend(fontsize=8), ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_value_of_rater(out: dict, raters: list[dict], path: Path) -> None:
    """LLMHNI's clean-test Recall@20 against the simulated rater's AUC, one panel per cell:
    the curve at each coverage (error bars: std over seeds), the references as horizontal
    lines, the break-even AUC with its interval, each --assess rater's AUCs as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = out["auc_curves"]
    fig, axes = plt.subplots(1, len(entries), figsize=(7 * len(entries), 5), squeeze=False)
    for ax, e in zip(axes[0], entries):
        for i, c in enumerate(e["curves"]):
            color = f"C{i}"
            ax.errorbar(c["aucs"], c["mean"], yerr=c["std"], marker="o", color=color, capsize=3,
                        label=f"LLMHNI, {c['label']} candidates (coverage {c['coverage']:.2f})")
            be = c["break_even"]
            if np.isfinite(be["x"]):
                ax.axvline(be["x"], color=color, lw=1, alpha=0.8)
                hi = be["hi"] if np.isfinite(be["hi"]) else max(c["aucs"])
                ax.axvspan(be["lo"], hi, color=color, alpha=0.1)
        for y, style, name in ((e["no_denoise"], "-.", "LLMHNI without denoising"),
                               (e["bpr"], ":", "BPR"), (e["oracle"], "--", "oracle")):
            ax.axhline(y, color="k", ls=style, lw=1, label=name)
        task = "natural" if e["tag"].startswith("natural") else "synthetic"
        marks = {"user": "^", "item": "v", "both": "s"}
        for j, r in enumerate(raters):
            for view, x in r["aucs"].get(task, {}).items():
                ax.plot([x], [0], transform=ax.get_xaxis_transform(), marker=marks[view],
                        ms=9, color=f"C{j + 3}", clip_on=False, ls="none",
                        label=f"{r['name']} {view} AUC {x:.2f}"
                              + (" (constant)" if view in r["constant"] else ""))
        ax.set(xlabel="simulated rater AUC (noisy vs clean observed candidates)",
               ylabel="clean-test Recall@20", xlim=(0.48, 1.02),
               title=f"{e['tag']}: value of the rater\n(vertical line: break-even AUC; band: "
                     "its 95% interval over users)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    base = base_settings(args.config, args.seeds, args.epochs)
    if args.adapter:
        base["rater.adapter"] = args.adapter
    names = (args.scenarios.split(",") if args.scenarios
             else ["natural", "synthetic20"] if args.quick else list(SCENARIOS))
    scenarios = {n: SCENARIOS[n] for n in names}
    backbones = (args.backbones.split(",") if args.backbones
                 else ["lightgcn"] if args.quick else BACKBONES)
    out = {"rows": [], "sim_rows": [], "pairs": [], "curve": [], "figures": {}, "choices": [],
           "times": [], "auc_rows": [], "break_even_rows": [], "auc_curves": [],
           "first_backbone": backbones[0]}
    t0 = time.perf_counter()
    for scen, noise in scenarios.items():
        for backbone in backbones:
            t1, before = time.perf_counter(), dict(TRAININGS)
            run_scenario(args, base, scen, noise, backbone, out)
            minutes = (time.perf_counter() - t1) / 60
            new, reused = (TRAININGS[k] - before[k] for k in ("trained", "reused"))
            out["figures"][f"{scen}/{backbone}/minutes"] = minutes
            out["figures"][f"{scen}/{backbone}/trainings"] = new
            out["times"].append([f"{scen}/{backbone}", f"{minutes:.1f}", str(new), str(reused)])
    seconds = time.perf_counter() - t0

    from llmhni_local.report import GAP_RULE

    auc_seeds = f"{args.auc_seeds} seed{'s' if args.auc_seeds > 1 else ''}"
    tables = [
        (["data", "backbone", "method", "Recall@20", "NDCG@20", "BPR->oracle"], out["rows"],
         "Clean-test ranking (llmhni-sim0: simulated rater at error 0; llmhni-llm: local LLM)",
         GAP_RULE + "."),
        (["data", "backbone", "LLMHNI vs", "Recall@20 diff", "95% CI (users)"], out["pairs"],
         "Paired differences, same seeds, bootstrap over users", ""),
        (["cell", "setting", "Recall@20", "vs BPR [95% CI]"], out["sim_rows"],
         "LLMHNI with the SIMULATED rater: error and budget curves", ""),
        (["cell", "candidates (coverage)", "AUC", "realised AUC", "Recall@20",
          "- no denoising"], out["auc_rows"],
         f"Value of the rater: LLMHNI against the SIMULATED rater's AUC ({auc_seeds}; "
         "binormal scores, threshold at the true share of clean observed candidates)",
         "BPR on G' is not a method of the pipeline's method table, so it is not shown."),
        (["cell", "candidates (coverage)", "no denoising", "BPR", "oracle", "break-even AUC",
          "95% CI (users)", "resamples not reaching"], out["break_even_rows"],
         "Break-even AUC: the lowest AUC at which LLMHNI with the rater matches LLMHNI without "
         "denoising (linear between grid points; 1,000 bootstrap resamples of users)", ""),
        (["cell", "validation Recall@20 by setting", "chosen"], out["choices"],
         "LLMHNI's similarity threshold quantile q and contrastive weight w (lambda_de = "
         "lambda_hal), chosen on validation, seed 0", ""),
        (["cell", "minutes", "trainings run", "reused by key"], out["times"],
         "Time per cell (trainings: Rec_pre and train runs, per seed)", ""),
    ]
    if not out["auc_curves"]:  # --no-auc-curve, or no scenario of --auc-scenarios ran
        tables = [t for t in tables if t[1] is not out["auc_rows"]
                  and t[1] is not out["break_even_rows"]]
    for head, rows, title, note in tables:
        print_table(head, rows, title=title)
        if note:
            print(note, flush=True)
    # the plots go to docs/, or with --no-docs beside the run folders (OUT)
    figs_dir = Path(args.out) if args.no_docs else REPO_ROOT / "docs"
    figs_dir.mkdir(parents=True, exist_ok=True)
    plot(out, figs_dir / "denoise_curves.png")
    if out["auc_curves"]:
        plot_value_of_rater(out, args.raters, figs_dir / "value_of_rater.png")
    if not args.no_docs:
        _write_docs(args, [(t, format_table(h, r) + (f"\n\n{n}" if n else ""))
                           for h, r, t, n in tables], seconds, bool(out["auc_curves"]))
    result = {"bench": "denoise", "quick": args.quick, "seeds": args.seeds, "seconds": seconds,
              **out["figures"]}
    emit_json(result)
    return result


def _shown(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def _write_docs(args, tables: list[tuple[str, str]], seconds: float, auc_plot: bool) -> None:
    path = REPO_ROOT / "docs" / "BENCHMARKS.md"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    cmd = docs_command("denoise.py")
    body = "\n\n".join(f"{title}:\n\n{table}" for title, table in tables)
    block = (f"{MARK_BEGIN}\n## Denoising (`{cmd}`)\n\n"
             f"Measured {time.strftime('%Y-%m-%d')}: {seconds / 60:.0f} minutes on "
             f"{os.cpu_count()} CPU cores; runs whose keys match earlier ones in `{_shown(args.out)}` "
             "are reused, so the minutes count only what was recomputed. Clean-test metrics (full ranking, training "
             "items masked, test read once at the best validation epoch). BPR->oracle: "
             "(method - BPR) / (oracle - BPR) on Recall@20. The simulated rater reads the "
             "ground-truth flags of observed candidates (a study, not an LLM result).\n\n"
             + body + "\n\n![denoise curves](denoise_curves.png)\n"
             + ("\n![value of the rater](value_of_rater.png)\n" if auc_plot else "") + MARK_END)
    if MARK_BEGIN in text:
        text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main(parse_args())
