"""Does L_hal suppress a rater's hallucinated edges? LLMHNI with and without it on verdicts
with known false edits (docs/DESIGN.md, "Hallucinated edges").

1. A base run (``OUT/base``) gets verdicts from the SIMULATED perfect rater on candidates
   covering >= 80% of the flagged-noisy edges of MovieLens-100K as given: right edits only.
2. For each rate r, :func:`llmhni_local.verdicts.hallucinated.false_edits` draws r x |train|
   false adds (pairs in no split, judged hard) and as many false removals (clean training
   pairs, judged noisy), disjoint from the base verdicts. Base and false verdicts together are
   written as one verdicts file in the data's raw ids (``OUT/files/``) and brought in as
   verdicts made elsewhere (``verdicts.file``; docs/IMPORTING.md), so the train stage builds
   G' from them as it would from any outside rater.
3. ``llmhni`` and ``llmhni-no-hal`` train on each file (one folder ``OUT/cells``; every run
   is kept by key, so a killed bench picks up where it stopped).

Reported per rate and method (mean over seeds): clean-test Recall@20, and where the trained
model puts the edges, as the mean percentile of each pair's score among all of its user's
items (1 = the user's top item, 0.5 = a random item; ``eval.ranking.score_percentiles``):

* ``false adds``: the injected added edges. Suppression means these sit low, near random
  unobserved pairs, even though G' holds them as edges;
* ``false removals``: the clean edges the false verdicts took out of G';
* ``real edges``: training edges G' kept (a sample of 5,000);
* ``random``: unobserved pairs in no split (a sample of 5,000).

``suppression`` = (real - false adds) / (real - random): 0 when the false adds score like the
real edges, 1 when they score like random pairs. Writes docs/BENCHMARKS.md (between markers)
and docs/hallucination.png, and ends with one JSON line.

    python bench/hallucination.py --quick   # rates 0 and 0.05, 1 seed
    python bench/hallucination.py           # rates 0, 0.02, 0.05, 0.1; 3 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _common import (
    REPO_ROOT,
    add_pipeline_args,
    check_jobs,
    emit_json,
    float_list,
    format_table,
    mean_pm,
    pipeline_settings,
    print_table,
    run_main,
    write_docs_block,
)

RATES = "0,0.02,0.05,0.1"
METHODS = ("llmhni", "llmhni-no-hal")
SAMPLE = 5000
#: Seconds of one LLMHNI training on the demo schedule (comparison bench, 2 cores), and of the
#: stages before it (embeddings, alignment, Rec_pre, candidates).
TRAIN_S, BASE_S = 110, 240


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="rates 0 and 0.05, 1 seed")
    p.add_argument("--rates", default=None, help=f"false-edit rates (default {RATES})")
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default 3; 1 quick)")
    add_pipeline_args(p, "bench-hallucination")
    a = p.parse_args(argv)
    a.seeds = a.seeds or (1 if a.quick else 3)
    a.rates = float_list("--rates", a.rates or ("0,0.05" if a.quick else RATES), lo=0, hi=0.5)
    check_jobs(a.jobs)
    return a


def estimate_s(args) -> float:
    return BASE_S + len(args.rates) * len(METHODS) * args.seeds * TRAIN_S / min(
        args.jobs, os.cpu_count() or 1)




def base_run(args, base: dict):
    """The simulated perfect rater's verdicts (BPR only is trained: it is Rec_pre's copy)."""
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.settings import load_run_config

    cfg = load_run_config(None, {**base, "pipeline.out": str(Path(args.out) / "base"),
                                 "pipeline.methods": ["bpr"], "pipeline.seeds": [0],
                                 "pipeline.rater": "simulated", "pipeline.simulated_error": 0.0,
                                 "candidates.k_pos_share": 0.7, "candidates.k_pos": 0,
                                 "candidates.k_neg": 0, "candidates.budget": 0})
    return run_pipeline(cfg, progress=False, log=lambda m: print("   ", m, flush=True))


def write_file(path: Path, data, judged, edits) -> None:
    """One verdicts file in raw ids: the base run's verdicts, then the false ones. Written only
    when its content changes, so a rerun keeps the file's sha256 (and the runs keyed by it)."""
    from llmhni_local.core.io import atomic_path

    rows = [(data.user_ids[u], data.item_ids[i], v)
            for u, i, v in zip(judged["user"], judged["item"], judged["verdict"])]
    rows += [(data.user_ids[u], data.item_ids[i], "hard") for u, i in edits.added]
    rows += [(data.user_ids[u], data.item_ids[i], "noisy") for u, i in edits.removed]
    text = "user,item,verdict\n" + "".join(f"{u},{i},{v}\n" for u, i, v in rows)
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def random_unobserved(data, avoid: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    m = np.int64(data.n_items)
    taken = np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1, 2)
                            for a in (data.train, data.val, data.test, avoid)])
    taken = taken[:, 0] * m + taken[:, 1]
    draw = rng.integers(0, data.n_users, 3 * n) * m + rng.integers(0, data.n_items, 3 * n)
    draw = np.unique(draw[~np.isin(draw, taken)])[:n]
    return np.stack([draw // m, draw % m], 1)


def placement(run, method: str, seed: int, edits, rng_seed: int = 0) -> dict:
    """Mean score percentiles of the false adds, false removals, kept real edges and random
    unobserved pairs under the trained model of ``train/METHOD/seedS`` (on G', as it is
    evaluated)."""
    from llmhni_local.eval.ranking import score_percentiles
    from llmhni_local.graph.adjacency import bipartite_adjacency
    from llmhni_local.llmhni.denoise import denoised_edges
    from llmhni_local.stages.methods import verdict_table
    from llmhni_local.train.run import load_trained

    data = run.data
    edges_gp, _ = denoised_edges(data.train, verdict_table(run))
    model = load_trained(run.dir / "train" / method / f"seed{seed}", data)
    u, i = model(bipartite_adjacency(edges_gp, data.n_users, data.n_items))
    rng = np.random.default_rng(rng_seed)
    m = np.int64(data.n_items)
    train_codes = data.train[:, 0].astype(np.int64) * m + data.train[:, 1]
    kept = edges_gp[np.isin(edges_gp[:, 0] * m + edges_gp[:, 1], train_codes)]
    kept = kept[rng.choice(len(kept), size=min(SAMPLE, len(kept)), replace=False)]
    rand = random_unobserved(data, edits.added, SAMPLE, rng)

    def mean(pairs) -> float:
        return float(score_percentiles(u, i, pairs).mean()) if len(pairs) else float("nan")

    out = {"false_adds": mean(edits.added), "false_removals": mean(edits.removed),
           "real": mean(kept), "random": mean(rand)}
    span = out["real"] - out["random"]
    out["suppression"] = ((out["real"] - out["false_adds"]) / span
                          if np.isfinite(out["false_adds"]) and span > 0 else float("nan"))
    return out


def run_all(args) -> dict:
    from llmhni_local.core.progress import progress_bar
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.methods import verdict_table
    from llmhni_local.stages.settings import load_run_config
    from llmhni_local.verdicts.hallucinated import false_edits

    base = pipeline_settings(args, **{"data.synthetic_noise": 0.0})
    print("== base: the simulated perfect rater's verdicts", flush=True)
    b = base_run(args, base)
    judged = verdict_table(b)
    judged_pairs = np.stack([judged["user"].to_numpy(np.int64),
                             judged["item"].to_numpy(np.int64)], 1)
    results: dict = {}
    with progress_bar("hallucination", len(args.rates)) as bar:
        for rate in args.rates:
            edits = false_edits(b.data, rate, seed=0, exclude=judged_pairs)
            path = Path(args.out) / "files" / f"verdicts_r{rate:g}.csv"
            write_file(path, b.data, judged, edits)
            print(f"== rate {rate:g}: {len(edits.added)} false adds, {len(edits.removed)} "
                  "false removals", flush=True)
            cfg = load_run_config(None, {**base, "pipeline.out": str(Path(args.out) / "cells"),
                                         "pipeline.methods": list(METHODS),
                                         "pipeline.seeds": list(range(args.seeds)),
                                         "verdicts.file": str(path),
                                         "verdicts.source": f"simulated perfect rater + "
                                                            f"{rate:.0%} false edits"})
            run = run_pipeline(cfg, progress=False, log=lambda m: print("   ", m, flush=True))
            for method in METHODS:
                for seed in range(args.seeds):
                    met = json.loads((run.dir / "train" / method / f"seed{seed}" /
                                      "metrics.json").read_text())
                    results.setdefault((rate, method), []).append(
                        {"seed": seed, "recall@20": met["test"]["recall@20"],
                         **placement(run, method, seed, edits)})
            bar.advance(1)
    return results


FIELDS = ("recall@20", "false_adds", "false_removals", "real", "random", "suppression")


def table(results: dict) -> list[list]:
    rows = []
    for (rate, method), seeds in results.items():
        rows.append([f"{rate:.0%}", method] + [mean_pm([s[f] for s in seeds])
                                                  for f in FIELDS])
    return rows


def plot(results: dict, rates: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    x = [100 * r for r in rates]
    for method, style in zip(METHODS, ("-", "--")):
        mean = {f: [np.mean([s[f] for s in results[(r, method)]]) for r in rates] for f in FIELDS}
        a.plot(x, mean["recall@20"], "o" + style, color="black", label=method)
        b.plot(x, mean["false_adds"], "o" + style, color="tab:red", label=f"false adds, {method}")
        b.plot(x, mean["real"], style, color="tab:green", lw=1, label=f"real edges, {method}")
        b.plot(x, mean["random"], style, color="tab:grey", lw=1, label=f"random pairs, {method}")
    a.set_xlabel("false edits (% of training pairs, each kind)")
    a.set_ylabel("test Recall@20")
    b.set_xlabel("false edits (% of training pairs, each kind)")
    b.set_ylabel("mean score percentile within the user")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args) -> dict:
    est = estimate_s(args)
    print(f"hallucination: {len(args.rates)} rates x {len(METHODS)} methods x {args.seeds} "
          f"seeds; estimated {est / 60:.0f} min on a 2-core CPU if nothing is reused", flush=True)
    if args.estimate:
        return {"estimate_s": est}
    t0 = time.perf_counter()
    results = run_all(args)
    seconds = time.perf_counter() - t0
    headers = ["false edits", "method", "Recall@20", "false adds", "false removals",
               "real edges", "random pairs", "suppression"]
    rows = table(results)
    title = "Mean score percentile within the user (1 = top, 0.5 = random item)"
    print_table(headers, rows, title)
    figures = {f"{r:g}/{m}/{f}": float(np.mean([s[f] for s in seeds]))
               for (r, m), seeds in results.items() for f in FIELDS}
    if not args.no_docs:
        docs = REPO_ROOT / "docs"
        plot(results, args.rates, docs / "hallucination.png")
        cmd = "python bench/hallucination.py" + (" --quick" if args.quick else "")
        write_docs_block("hallucination.py", (
            f"## Hallucinated edges (`{cmd}`)\n\nMeasured {time.strftime('%Y-%m-%d')} in "
            f"{seconds / 60:.0f} minutes on {os.cpu_count()} CPU cores: MovieLens-100K as given, "
            f"LightGCN, {args.seeds} seed(s); the base verdicts are the SIMULATED perfect "
            "rater's, the false edits are drawn at each rate (both kinds). " + title + ".\n\n"
            + format_table(headers, rows) + "\n\n![hallucinated edges](hallucination.png)\n"))
    result = {"bench": "hallucination", "seeds": args.seeds, "seconds": seconds, **figures}
    emit_json(result)
    return result


if __name__ == "__main__":
    run_main(lambda: main(parse_args()))
