"""What the semantic-guided negatives do to the ranking, by similarity threshold quantile.

Brings a simulated cell of ``bench/denoise.py`` back to its main setting (every stage and
baseline is reused by key; only what differs is recomputed: the candidates and verdicts of
the main share), then, in that one process, retrains LLMHNI (one seed) with uniform negatives
and with the threshold rule at each ``--quantiles`` value, into ``CELL/threshold-study/`` (the
cell's own runs are left alone). For each model, and for BPR and the oracle of the cell, it reports:

* validation and test Recall@20 (validation picks settings; test is read here only to explain
  the figures of docs/BENCHMARKS.md, never to choose);
* the mean aligned similarity ``cos(z'_u, z'_i)`` of the top-20 test-time list, next to that
  of the user's own training, validation and test items;
* the mean training popularity of the top-20 list;
* the share of pool candidates the rule protected (the false-negative suspects).

A negative is never more similar to the user than the threshold, so the lower the quantile,
the more the model learns the profile similarity itself; the similarity of its lists shows it.
docs/DESIGN.md, "Semantic negatives and the similarity threshold", reads these figures.

    python bench/semantic_threshold.py --scenario natural --contrast 0.01
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from _common import emit_json, fail, float_list, print_table

K = 20


def parse_args(argv=None) -> argparse.Namespace:
    from denoise import REPO_ROOT, SCENARIOS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=list(SCENARIOS), default="natural")
    p.add_argument("--backbone", choices=["lightgcn", "ngcf"], default="lightgcn")
    p.add_argument("--contrast", type=float, default=0.01,
                   help="LLMHNI's contrastive weight (lambda_de = lambda_hal), as the denoise "
                        "bench chose it for the cell")
    p.add_argument("--quantiles", default="0.5,0.75,0.9,1.0",
                   help="llmhni.threshold_quantile values, comma-separated, each in [0, 1]")
    p.add_argument("--seed", type=int, default=0, help="training seed of the retrained models")
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "ml100k.toml"))
    p.add_argument("--epochs", type=int, default=200, help="as the denoise bench's --epochs")
    p.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench-denoise"),
                   help="the denoise bench's --out")
    args = p.parse_args(argv)
    args.q = float_list("--quantiles", args.quantiles, lo=0, hi=1)
    if args.contrast < 0:
        fail(f"--contrast must be >= 0, got {args.contrast}")
    return args


def list_stats(user_emb, item_emb, data, sim: np.ndarray, pop: np.ndarray) -> dict:
    """Recall@20 on validation and test, and the top-20 test-time lists' mean similarity and
    popularity (training items masked; validation items too at test time)."""
    import torch

    from llmhni_local.eval.ranking import evaluate_ranking

    out = {"val": evaluate_ranking(user_emb, item_emb, data.val, [data.train])["recall@20"],
           "test": evaluate_ranking(user_emb, item_emb, data.test, [data.train, data.val])["recall@20"]}
    users = np.unique(data.test[:, 0])
    with torch.no_grad():
        scores = user_emb[torch.from_numpy(users)] @ item_emb.T
    row = {u: r for r, u in enumerate(users)}
    for pairs in (data.train, data.val):
        keep = np.isin(pairs[:, 0], users)
        rows = np.array([row[u] for u in pairs[keep, 0]], dtype=np.int64)
        scores[torch.from_numpy(rows), torch.from_numpy(pairs[keep, 1])] = -torch.inf
    top = torch.topk(scores, K, dim=1).indices.numpy()
    out["top_sim"] = float(np.take_along_axis(sim[users], top, 1).mean())
    out["top_pop"] = float(pop[top].mean())
    return out


def main(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from denoise import SCENARIOS, base_settings, cell, cell_settings

    from llmhni_local.graph.adjacency import bipartite_adjacency
    from llmhni_local.llmhni.denoise import denoised_edges, oracle_edges
    from llmhni_local.stages.context import Run
    from llmhni_local.stages.methods import train_method, verdict_table
    from llmhni_local.stages.settings import load_run_config
    from llmhni_local.train.run import load_trained

    t0 = time.perf_counter()
    _, settings = cell_settings(base_settings(args.config, 1, args.epochs),
                                SCENARIOS[args.scenario], args.backbone)
    settings.update({"pipeline.seeds": [args.seed], "llmhni.lambda_de": args.contrast,
                "llmhni.lambda_hal": args.contrast})
    run_dir = Path(args.out) / f"{args.scenario}-{args.backbone}"
    print(f"== {run_dir.name}: bringing the cell back to its main setting (reused by key)", flush=True)
    cell(settings, run_dir, **{"pipeline.methods": ["bpr", "oracle"],
                               "pipeline.simulated_error": 0.0})
    run = Run(load_run_config(None, {**settings, "pipeline.out": str(run_dir)}), progress=False,
              log=lambda m: None)
    data = run.data
    z = np.load(run_dir / "align" / "aligned.npz")
    zu, zi = (F.normalize(torch.as_tensor(z[k], dtype=torch.float32), dim=1) for k in ("users", "items"))
    sim = (zu @ zi.T).numpy()
    pop = np.bincount(data.train[:, 1], minlength=data.n_items).astype(np.float64)
    gp, _ = denoised_edges(data.train, verdict_table(run))
    adj = {"G": bipartite_adjacency(data.train, data.n_users, data.n_items),
           "G'": bipartite_adjacency(gp, data.n_users, data.n_items)}
    if data.train_noise is not None:
        adj["oracle"] = bipartite_adjacency(oracle_edges(data.train, data.train_noise),
                                            data.n_users, data.n_items)

    rows, figs = [], {}
    for name, pairs in (("training items", data.train), ("validation items", data.val),
                        ("test items", data.test)):
        s = float(sim[pairs[:, 0], pairs[:, 1]].mean())
        rows.append([name, "-", "-", f"{s:.3f}", f"{pop[pairs[:, 1]].mean():.0f}", "-"])
        figs[f"items/{name.split()[0]}/sim"] = s

    def report(label: str, path: Path, graph: str, protected: str = "-") -> None:
        model = load_trained(path, data)
        with torch.no_grad():
            u, i = model(adj[graph])
        st = list_stats(u, i, data, sim, pop)
        rows.append([label, f"{st['val']:.4f}", f"{st['test']:.4f}", f"{st['top_sim']:.3f}",
                     f"{st['top_pop']:.0f}", protected])
        for k, v in st.items():
            figs[f"{label}/{k}"] = v

    seed = args.seed
    for base, graph in (("bpr", "G"), ("oracle", "oracle")):
        path = run_dir / "train" / base / f"seed{seed}"
        if graph in adj and (path / "model.pt").is_file():
            report(base, path, graph)
    study = run_dir / "threshold-study"
    variants = [("uniform negatives", "llmhni-no-semneg", None)] + [
        (f"threshold q={q:g}", "llmhni", q) for q in args.q]
    for label, method, q in variants:
        print(f"== training {label} (seed {seed})", flush=True)
        if q is not None:
            run.cfg = dataclasses.replace(run.cfg, llmhni=dataclasses.replace(
                run.cfg.llmhni, threshold_quantile=q))
        out = study / label.replace(" ", "-").replace("=", "") / f"seed{seed}"
        train_method(run, method, seed, out)
        protected = "-"
        if q is not None:
            hist = json.loads((out / "history.json").read_text())
            flagged = np.mean([h["false_negatives_flagged"] for h in hist])
            protected = f"{flagged / (run.cfg.llmhni.pool_size * run.cfg.train.batch_size):.3f}"
        report(label, out, "G'", protected)

    print_table(["model", "val R@20", "test R@20", f"top-{K} sim", f"top-{K} popularity",
                 "protected share"], rows,
                title=f"{run_dir.name}: semantic negatives by threshold quantile (seed {seed})")
    result = {"bench": "semantic_threshold", "run": run_dir.name, "seed": seed,
              "seconds": time.perf_counter() - t0, **figs}
    emit_json(result)
    return result


if __name__ == "__main__":
    main(parse_args())
