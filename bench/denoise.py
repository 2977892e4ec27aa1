"""Denoising benchmark: baselines, LLMHNI, its ablations and the simulated-rater curve.

On MovieLens-100K under natural noise (and, without ``--quick``, with 10% and 20% synthetic
noise), for LightGCN (and NGCF without ``--quick``): BPR, T-CE, R-CE, SGL, LLMHNI with the
local LLM rater and its four ablations, mean ± std over seeds; then LLMHNI with the simulated
rater at error rates 0, 0.1, 0.2, 0.3, 0.4 (it reads the noise flags: a study of how much rater
accuracy the gain needs, marked as simulated everywhere).

Every cell is a pipeline run (``llmhni_local.pipeline``) in ``runs/bench-denoise/<scenario>``;
the stages it shares with the previous cell are reused. Writes the tables into
``docs/BENCHMARKS.md`` (between markers) and ends with one JSON line of the figures.

    python bench/denoise.py --quick            # natural noise, LightGCN, 1 seed, short training
    python bench/denoise.py --seeds 3          # everything (hours on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from _common import REPO_ROOT, emit_json, format_table, print_table

BASELINES = ["bpr", "tce", "rce", "sgl"]
LLMHNI = ["llmhni", "llmhni-no-semneg", "llmhni-no-align", "llmhni-no-denoise", "llmhni-no-hal"]
ERRORS = [0.0, 0.1, 0.2, 0.3, 0.4]
MARK_BEGIN, MARK_END = "<!-- bench/denoise.py:begin -->", "<!-- bench/denoise.py:end -->"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="natural noise, LightGCN, short training")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per cell")
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "ml100k.toml"),
                   help="base pipeline settings")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--adapter", default=None, help="LoRA adapter for the rater (rater.adapter)")
    p.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench-denoise"))
    p.add_argument("--no-docs", action="store_true", help="do not write docs/BENCHMARKS.md")
    return p.parse_args()


def cell(base: dict, out: Path, **overrides) -> dict:
    from llmhni_local.pipeline import load_run_config, run_pipeline

    cfg = load_run_config(None, {**base, "pipeline.out": str(out), **overrides})
    run = run_pipeline(cfg, progress=False, log=lambda m: print("   ", m, flush=True))
    results = json.loads((run.dir / "results.json").read_text())["methods"]
    report = json.loads((run.dir / "report.json").read_text()) if (run.dir / "report.json").is_file() else {}
    return {"methods": results, "identification": report.get("identification", {})}


def main(args: argparse.Namespace) -> dict:
    from llmhni_local.config import read_toml

    base_toml = read_toml(args.config)
    base = {f"{t}.{k}": v for t, table in base_toml.items() for k, v in table.items()}
    base.pop("pipeline.out", None)
    seeds = list(range(args.seeds))
    base["pipeline.seeds"] = seeds
    if args.epochs:
        base["train.epochs"] = args.epochs
    if args.adapter:
        base["rater.adapter"] = args.adapter
    scenarios = {"natural": 0.0} if args.quick else {"natural": 0.0, "synthetic10": 0.1, "synthetic20": 0.2}
    backbones = ["lightgcn"] if args.quick else ["lightgcn", "ngcf"]
    methods = BASELINES + (["llmhni"] if args.quick else LLMHNI)
    errors = [0.0, 0.2, 0.4] if args.quick else ERRORS

    rows, sim_rows, figures = [], [], {}
    t0 = time.perf_counter()
    for scen, noise in scenarios.items():
        for backbone in backbones:
            out = Path(args.out) / f"{scen}-{backbone}"
            print(f"== {scen} / {backbone}: {', '.join(methods)}", flush=True)
            common = {**base, "data.synthetic_noise": noise, "model.name": backbone}
            res = cell(common, out, **{"pipeline.methods": methods, "pipeline.rater": "llm"})
            for m in methods:
                r = res["methods"][m]
                rows.append([scen, backbone, m, _ms(r, "recall@20"), _ms(r, "ndcg@20")])
                figures[f"{scen}/{backbone}/{m}/recall@20"] = r["recall@20_mean"]
            ident = res["identification"].get("observed", {})
            if ident:
                figures[f"{scen}/{backbone}/llm_rater_noisy_f1"] = ident["f1"]
            for e in errors:
                print(f"== {scen} / {backbone}: llmhni with the SIMULATED rater, error {e}", flush=True)
                sres = cell(common, out, **{"pipeline.methods": ["llmhni"], "pipeline.rater": "simulated",
                                            "pipeline.simulated_error": e})
                r = sres["methods"]["llmhni"]
                sim_rows.append([scen, backbone, e, _ms(r, "recall@20"), _ms(r, "ndcg@20")])
                figures[f"{scen}/{backbone}/simulated{e}/recall@20"] = r["recall@20_mean"]
    seconds = time.perf_counter() - t0

    head = ["data", "backbone", "method", "Recall@20", "NDCG@20"]
    print_table(head, rows, title="Clean-test ranking (LLM rater: zero-shot unless --adapter)")
    shead = ["data", "backbone", "simulated error", "Recall@20", "NDCG@20"]
    print_table(shead, sim_rows, title="LLMHNI with the SIMULATED rater")
    if not args.no_docs:
        _write_docs(args, format_table(head, rows), format_table(shead, sim_rows), seconds)
    result = {"bench": "denoise", "quick": args.quick, "seeds": len(seeds), "seconds": seconds,
              **figures}
    emit_json(result)
    return result


def _ms(r: dict, key: str) -> str:
    m, s = r[f"{key}_mean"], r[f"{key}_std"]
    return f"{m:.4f} ± {s:.4f}" if len(r["seeds"]) > 1 else f"{m:.4f}"


def _write_docs(args, table: str, sim_table: str, seconds: float) -> None:
    path = REPO_ROOT / "docs" / "BENCHMARKS.md"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    cmd = "python bench/denoise.py" + (" --quick" if args.quick else "") + f" --seeds {args.seeds}"
    block = (f"{MARK_BEGIN}\n## Denoising (`{cmd}`)\n\n"
             f"Measured {time.strftime('%Y-%m-%d')}, {seconds / 60:.0f} minutes on this machine. "
             "Clean-test metrics (full ranking, training items masked, test read once at the best "
             "validation epoch).\n\n" + table +
             "\n\nLLMHNI driven by the **simulated** rater (reads the ground-truth noise flags of "
             "observed candidates and errs at the given rate; gives no verdict on unobserved "
             "ones):\n\n" + sim_table + f"\n{MARK_END}")
    if MARK_BEGIN in text:
        text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main(parse_args())
