"""SGL and SimGCL on the RLMRec split of Amazon-book, beside RLMRec's published figures.

Trains SGL and SimGCL (and, with ``--with-lightgcn``, LightGCN with BPR as a reference row)
through the method table, ``llmhni_local.stages.methods.train_method``, i.e. exactly what
``llmhni train --method NAME`` runs, on RLMRec's Amazon-book split at RLMRec's protocol (dim 32,
3 layers, batch 4096, Adam lr 1e-3); the trainer early-stops on validation Recall@20 and reads
the test set once, at the best validation epoch. Prints test Recall@20 / NDCG@20 beside RLMRec's
published figures (Ren et al., "Representation Learning with Large Language Models for
Recommendation", WWW 2024, arXiv 2310.15950, Table 2, Amazon-book, mean of 5 seeds):

=========  =========  =======
method     Recall@20  NDCG@20
=========  =========  =======
LightGCN   0.1411     0.0856
SGL        0.1473     0.0913
SimGCL     0.1512     0.0919
=========  =========  =======

The issue's target: within 5% of the published figures, or the difference explained.

Settings: RLMRec's released configs (github HKUDS/RLMRec, commit 22413752,
``encoder/config/modelconf/sgl.yml`` and ``simgcl.yml``, the ``amazon`` entries; the mechanism
in ``encoder/models/general_cf/sgl.py``, ``simgcl.py``, ``lightgcn.py``, ``loss_utils.py``)
mapped onto ours:

- SGL: ``augmentation: edge_drop``, ``keep_rate: 0.8`` -> ``train.edge_drop = 0.2``;
  ``cl_weight: 0.1`` -> ``train.ssl_weight = 0.1``; ``temperature: 0.2`` ->
  ``train.ssl_temp = 0.2``; no warm-up -> ``train.ssl_warmup = 0`` (our default is 10).
- SimGCL: ``eps: 0.9``, ``cl_weight: 0.1``, ``temperature: 0.2``, no warm-up ->
  ``baselines.simgcl`` = ``llmhni_local.baselines.simgcl.RLMREC_AMAZON`` (eps 0.9, weight 0.1,
  temp 0.2, warmup 0); ``keep_rate: 1.0``: no edge dropout, as ours.
- Both: ``embedding_size: 32``, ``layer_num: 3``, ``batch_size: 4096``, Adam ``lr: 1e-3``
  -> ``model.dim``, ``model.layers``, ``train.batch_size``, ``train.lr``.

What differs (kept: it is the toolkit's protocol, the same for every method; the
trainer_parity section of bench/README.md measures the LightGCN part of it):

- Readout: our LightGCN averages layers 0..3, RLMRec's sums them. InfoNCE sees cosines, so
  the scale does not reach it, but BPR's scores are 16x smaller and under Adam the mean acts
  like a smaller learning rate (LightGCN needed about 500 epochs here at lr 1e-3).
- Regularisation: ours is ``train.l2`` (1e-4, the project default) x half the squared norm of
  the batch's layer-0 rows over the batch size; RLMRec's is ``reg_weight`` (1e-5 for SGL and
  SimGCL, 1e-6 for LightGCN) x the squared norm of all parameters, every batch.
- Initialisation: ours ``model.init`` (normal, std 0.1; ``--init xavier`` for Xavier on one
  table), RLMRec's Xavier-uniform on the user and item tables apart. SimGCL's noise has row
  norm eps whatever the embeddings' scale, so the noise-to-signal ratio of its views depends
  on it.
- SGL's views: ours are two edge-dropped graphs per EPOCH (``RecObjective.start_epoch``), each
  undirected edge dropped with both directions and the graph re-normalised; RLMRec draws two
  views per BATCH, dropping entries of the normalised adjacency (each direction on its own
  coin, no re-normalisation, no 1/keep rescale).
- InfoNCE: ours over the batch's distinct users and distinct positive items, the other
  distinct batch nodes as negatives (``losses.info_nce``, a mean); RLMRec's over every batch
  row (duplicates included) against all users / all items of the second view, summed and
  divided by the batch size, and for SGL with a third term on the negative items.
- Early stopping: ours on validation Recall@20 every ``--eval-every`` (10) epochs, patience
  ``--patience`` (5) evaluations, never before epoch 50 (``train.min_epochs``); RLMRec every 3
  epochs, patience 5.
- Test masking: ours masks training and validation items; RLMRec only training items. The
  table gives Recall@20 both ways (``R@20 trn-mask``: the same checkpoint, RLMRec's masking).
- Negatives: uniform, rejecting training positives, in both.

Each (method, seed) trains into ``--out/METHOD-seedN`` (METHOD as in the method table:
``sgl``, ``simgcl``, ``bpr``); a folder with ``metrics.json`` is reused (a killed run resumes),
after checking that it was trained with the same settings. Every finished (method, seed) is
also appended as one JSON line to ``bench/records/baseline_parity.jsonl`` (``--records``;
``bench/_records.py``): its key (a hash of :func:`overrides` without where or how fast it runs,
the split files' sha256 in place of the data folder's path, the method and the seed), the
commit, its figures and Recall@20 per test user. The file is part of the repository, so the
bench resumes on another machine, where ``--out`` is gone: a training whose key is recorded
runs nothing, and the table is rebuilt from the records alone. A ``--quick`` run keeps its
records in ``OUT/records.jsonl`` instead.

Usage::

    python bench/baseline_parity.py --quick --out /tmp/parity-smoke   # 2 epochs, 1 seed
    python bench/baseline_parity.py                                   # the full run, 1 seed
    python bench/baseline_parity.py --seeds 5 --with-lightgcn         # RLMRec: 5 seeds

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common, however this is run
from _common import (
    REPO_ROOT,
    emit_json,
    fail,
    mean_std,
    median,
    per_user,
    print_table,
    require_dir,
    run_main,
    shared_path,
)
from _records import Records, record_key

#: RLMRec (WWW 2024), Table 2, Amazon-book, mean of 5 seeds; ``bpr`` is LightGCN with BPR.
PUBLISHED = {
    "sgl": {"recall@20": 0.1473, "ndcg@20": 0.0913},
    "simgcl": {"recall@20": 0.1512, "ndcg@20": 0.0919},
    "bpr": {"recall@20": 0.1411, "ndcg@20": 0.0856},
}
LABELS = {"sgl": "SGL", "simgcl": "SimGCL", "bpr": "LightGCN (BPR)"}
TOLERANCE = 0.05  # within 5% of the published figure
SPLIT_FILES = ("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl")

#: RLMRec's sgl.yml (amazon) in our ``[train]`` settings: keep_rate 0.8 is a drop rate of 0.2.
SGL_RLMREC = {"train.ssl_weight": 0.1, "train.ssl_temp": 0.2, "train.edge_drop": 0.2,
              "train.ssl_warmup": 0}
#: Settings whose change does not make a finished run another run (where and how fast).
NOT_KEYED = ("threads", "device")
BENCH_FILE = "baseline_parity.json"  # per run folder: RLMRec-masked test metrics, wall time
RECORDS = REPO_ROOT / "bench" / "records" / "baseline_parity.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="sgl,simgcl",
                   help="comma-separated, of sgl and simgcl (default sgl,simgcl)")
    p.add_argument("--with-lightgcn", action="store_true",
                   help="also train LightGCN with BPR (method bpr) as the reference row")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds 0..N-1 per method (default 1; --quick: 1)")
    p.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs per run (default 600; --quick: 2)")
    p.add_argument("--eval-every", type=int, default=10,
                   help="epochs between validation evaluations (default 10)")
    p.add_argument("--patience", type=int, default=5,
                   help="evaluations without a better validation Recall@20 before stopping "
                        "(default 5)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--l2", type=float, default=1e-4,
                   help="L2 weight on the batch's layer-0 embeddings (default 1e-4, the "
                        "project's)")
    p.add_argument("--init", choices=["normal", "xavier"], default=None,
                   help="embedding initialisation (default: the project's model.init; RLMRec "
                        "uses xavier)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 0 keeps torch's default (default 1)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-parity"),
                   help="one folder per method and seed; finished ones are reused "
                        "(default runs/bench-parity)")
    p.add_argument("--data", type=Path, default=None,
                   help="RLMRec-format folder (default ../shared/data/rlmrec-amazon)")
    p.add_argument("--records", type=Path, default=None,
                   help="finished trainings, one JSON line each (default: the repository's "
                        f"{RECORDS.relative_to(REPO_ROOT)}, so a stopped run resumes on any "
                        "machine; OUT/records.jsonl for --quick runs)")
    p.add_argument("--quick", action="store_true", help="2 epochs, 1 seed: shows that it runs")
    p.add_argument("--quiet", action="store_true", help="no training progress lines")
    args = p.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else 1  # --quick: 1 as well
    args.epochs = args.epochs if args.epochs is not None else (2 if args.quick else 600)
    args.data = (args.data if args.data is not None
                 else shared_path("data", "rlmrec-amazon")).expanduser().resolve()
    if args.records is None:  # a smoke run never writes the repository's file
        args.records = args.out / "records.jsonl" if args.quick else RECORDS
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ("sgl", "simgcl")]
    if bad or not methods:
        fail(f"--methods takes sgl and/or simgcl, got {args.methods!r}")
    args.method_list = (["bpr"] if args.with_lightgcn else []) + list(dict.fromkeys(methods))
    if args.seeds <= 0 or args.epochs <= 0 or args.eval_every <= 0 or args.patience <= 0:
        fail("--seeds, --epochs, --eval-every and --patience must be > 0")
    if args.lr <= 0 or args.l2 < 0 or args.threads < 0:
        fail("--lr must be > 0, --l2 and --threads >= 0")
    return args


def overrides(args: argparse.Namespace) -> dict:
    """The dotted settings of every run of this bench (one config serves all methods: SGL
    reads ``train.ssl_*`` / ``train.edge_drop``, SimGCL ``baselines.simgcl``, BPR neither)."""
    from llmhni_local.baselines.simgcl import RLMREC_AMAZON

    out = {
        "pipeline.out": str(args.out),
        "data.source": f"rlmrec:{args.data}",
        "model.name": "lightgcn",
        "model.dim": 32,
        "model.layers": 3,
        "train.epochs": args.epochs,
        "train.batch_size": 4096,
        "train.lr": args.lr,
        "train.l2": args.l2,
        "train.eval_every": args.eval_every,
        "train.patience": args.patience,
        "train.threads": args.threads,
        "eval.ks": [10, 20],
        **SGL_RLMREC,
        **{f"baselines.simgcl.{k}": v for k, v in dataclasses.asdict(RLMREC_AMAZON).items()},
    }
    if args.init is not None:
        out["model.init"] = args.init
    return out


def data_identity(folder: Path) -> str:
    """The split's identity for the records' key: a hash of the three split files' sha256
    (about 3 MB on Amazon-book, well under a second; honest where sizes and names would not be,
    and the same on every machine, which the folder's path is not)."""
    from llmhni_local.core.io import sha256_file, sha256_text

    return sha256_text(json.dumps({f: sha256_file(folder / f) for f in SPLIT_FILES},
                                  sort_keys=True))


def keyed_settings(args: argparse.Namespace, data_id: str) -> dict:
    """What a training computes, for :func:`_records.record_key`: :func:`overrides` with the
    data folder's path replaced by ``data_id`` (:func:`data_identity`) and without
    ``train.threads`` (how fast, not what, as :data:`NOT_KEYED` has it for a folder);
    ``record_key`` itself leaves out ``pipeline.out``."""
    out = {k: v for k, v in overrides(args).items() if k != "train.threads"}
    out["data.source"] = f"rlmrec:sha256:{data_id}"
    return out


def plain(value):
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def expected_settings(run, method: str, seed: int) -> dict:
    """What a finished folder of ``(method, seed)`` must have been trained with: the
    ``TrainConfig`` that ``train_method`` builds (``metrics.json``'s ``config``) and the
    method's own settings table (its manifest entry), minus :data:`NOT_KEYED`."""
    from llmhni_local.core.config import to_dict
    from llmhni_local.stages.methods import METHOD_TABLE, method_train_settings, own_settings

    cfg = dataclasses.replace(run.cfg.train_config(),
                              train=method_train_settings(run, method, seed))
    config = plain(to_dict(cfg))
    for key in NOT_KEYED:
        config["train"].pop(key, None)
    own = (plain(to_dict(own_settings(run, method)))
           if METHOD_TABLE[method].settings else None)
    return {"config": config, "own": own}


def check_reusable(folder: Path, run, method: str, seed: int) -> None:
    """Refuse, in one line, a finished folder trained with other settings."""
    want = expected_settings(run, method, seed)
    config = json.loads((folder / "metrics.json").read_text())["config"]
    for key in NOT_KEYED:
        config["train"].pop(key, None)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    have = {"config": config, "own": manifest.get(method) if want["own"] is not None else None}
    diff = [f"{table}.{k}" for table in want["config"]
            for k in set(want["config"][table]) | set(have["config"].get(table, {}))
            if want["config"][table].get(k) != have["config"].get(table, {}).get(k)]
    if want["own"] != have["own"]:
        diff.append(f"{method}'s own settings")
    if diff:
        fail(f"{folder}: a finished run with other settings ({', '.join(sorted(diff))}); "
             "pass another --out or remove it")


def train_mask_only(folder: Path, data, ks) -> dict:
    """Test metrics of the folder's best checkpoint masking training items only (RLMRec's
    protocol; ours also masks validation items)."""
    import torch

    from llmhni_local.eval.ranking import evaluate_ranking
    from llmhni_local.graph.adjacency import bipartite_adjacency
    from llmhni_local.train.run import load_trained

    model = load_trained(folder, data)
    with torch.no_grad():  # every method here evaluates the clean model on the training graph
        u, i = model(bipartite_adjacency(data.train, data.n_users, data.n_items))
    return evaluate_ranking(u, i, data.test, [data.train], ks=tuple(ks))


def run_one(run, method: str, seed: int, records: Records, settings: dict) -> dict:
    """``(method, seed)``'s figures: read from ``records`` if its key is there (nothing runs);
    otherwise trained into its folder, or a finished folder reused, and recorded at once."""
    from llmhni_local.core.io import write_json
    from llmhni_local.stages.methods import train_method

    key = record_key(settings, method, seed)
    recorded = records.get(key)
    folder = Path(run.cfg.pipeline.out) / f"{method}-seed{seed}"
    if recorded is not None:
        print(f"{method} seed {seed}: read from {records.path}", flush=True)
        result, reused = recorded, True
    else:
        reused = (folder / "metrics.json").is_file()
        wall = None
        if reused:
            check_reusable(folder, run, method, seed)
            print(f"{method} seed {seed}: reusing {folder}", flush=True)
        else:
            print(f"{method} seed {seed}: training into {folder}", flush=True)
            t0 = time.perf_counter()
            train_method(run, method, seed, folder)
            wall = time.perf_counter() - t0
        metrics = json.loads((folder / "metrics.json").read_text())
        bench_path = folder / BENCH_FILE
        extra = json.loads(bench_path.read_text()) if bench_path.is_file() else {}
        if "test_train_mask_only" not in extra:
            extra["test_train_mask_only"] = train_mask_only(folder, run.data, run.cfg.eval.ks)
            extra["wall_seconds"] = wall
            write_json(bench_path, extra)
        result = {"test": metrics["test"], "val": metrics["val"],
                  "test_train_mask_only": extra["test_train_mask_only"],
                  "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"],
                  "epoch_seconds": metrics["epoch_seconds"], "device": metrics.get("device"),
                  "wall_seconds": extra.get("wall_seconds"), "per_user": per_user(folder)}
        records.add(key, {"method": method, "seed": seed, "max_epochs": settings["train.epochs"]},
                    result)
    row = {"method": method, "seed": seed,
           "folder": None if recorded is not None else str(folder),
           "recorded": recorded is not None, "reused": reused,
           **{k: v for k, v in result.items() if k != "per_user"}}
    print(f"{method} seed {seed}: best epoch {row['best_epoch']} of {row['epochs_run']}; test "
          f"recall@20 {row['test']['recall@20']:.4f} ndcg@20 {row['test']['ndcg@20']:.4f} "
          f"(training items masked only: recall@20 "
          f"{row['test_train_mask_only']['recall@20']:.4f}); "
          f"{row['epoch_seconds']:.2f} s/epoch on {row['device']}", flush=True)
    return row


def summarise(method: str, runs: list[dict]) -> dict:
    """Mean ± std over seeds and the ratios to the published figures."""
    out: dict = {"label": LABELS[method], "seeds": len(runs),
                 "published": PUBLISHED[method]}
    for key in ("recall@20", "ndcg@20"):
        mean, std = mean_std([r["test"][key] for r in runs])
        out[f"{key}_mean"], out[f"{key}_std"] = mean, std
        out[f"{key}_ratio"] = mean / PUBLISHED[method][key]
    out["recall@20_train_mask_only_mean"] = mean_std(
        [r["test_train_mask_only"]["recall@20"] for r in runs])[0]
    out["best_epochs"] = [r["best_epoch"] for r in runs]
    out["epochs_run"] = [r["epochs_run"] for r in runs]
    out["epoch_seconds"] = median([r["epoch_seconds"] for r in runs])
    out["within_5pct"] = all(abs(out[f"{k}_ratio"] - 1.0) <= TOLERANCE
                             for k in ("recall@20", "ndcg@20"))
    out["per_seed"] = runs
    return out


def table(summary: dict) -> None:
    def cell(s: dict, key: str) -> str:
        return (f"{s[f'{key}_mean']:.4f} ± {s[f'{key}_std']:.4f}" if s["seeds"] > 1
                else f"{s[f'{key}_mean']:.4f}")

    rows = [[s["label"], cell(s, "recall@20"), cell(s, "ndcg@20"),
             f"{s['published']['recall@20']:.4f} / {s['published']['ndcg@20']:.4f}",
             f"{s['recall@20_ratio']:.3f} / {s['ndcg@20_ratio']:.3f}",
             s["recall@20_train_mask_only_mean"],
             ", ".join(str(e) for e in s["best_epochs"]), f"{s['epoch_seconds']:.2f}"]
            for s in summary.values()]
    seeds = max(s["seeds"] for s in summary.values())
    print_table(["method", "Recall@20", "NDCG@20", "RLMRec R@20 / N@20", "ratio R / N",
                 "R@20 trn-mask", "best epoch", "s/epoch"], rows, digits=4,
                title=f"Test at the best validation Recall@20 epoch ({seeds} seed(s); "
                      "training and validation items masked; trn-mask: training items only, "
                      "as RLMRec)")


def main(args: argparse.Namespace) -> int:
    require_dir(args.data, "RLMRec data folder", SPLIT_FILES)
    import torch

    from llmhni_local.stages.context import Run
    from llmhni_local.stages.settings import load_run_config

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_run_config(None, overrides(args))
    run = Run(cfg, progress=not args.quiet)
    records = Records(args.records)  # a broken line is a UserError: one line, exit 2
    settings = keyed_settings(args, data_identity(args.data))
    runs = [(m, seed) for m in args.method_list for seed in range(args.seeds)]
    recorded = sum(records.get(record_key(settings, m, seed)) is not None for m, seed in runs)
    print(f"records: {recorded} of the {len(runs)} trainings are in {args.records}", flush=True)
    data = str(args.data)
    if recorded < len(runs):  # the data is read only when something trains or is reused
        info = run.data.info()
        data += (f" ({info['users']} users, {info['items']} items; {info['train']} / "
                 f"{info['val']} / {info['test']} train / val / test)")
    print(f"data: {data}; LightGCN dim 32, 3 layers, "
          f"{cfg.model.init} init, batch 4096, lr {args.lr:g}, l2 {args.l2:g}, up to "
          f"{args.epochs} epochs, validation every {args.eval_every}, patience "
          f"{args.patience}; torch threads {torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    summary = {m: summarise(m, [run_one(run, m, seed, records, settings)
                                for seed in range(args.seeds)])
               for m in args.method_list}
    table(summary)
    result: dict = {}
    for m, s in summary.items():
        for key in ("recall@20_mean", "ndcg@20_mean", "recall@20_ratio", "ndcg@20_ratio",
                    "within_5pct", "epoch_seconds"):
            result[f"{m}/{key}"] = s[key]
    result.update({
        "quick": bool(args.quick),
        "seeds": args.seeds,
        "published_rlmrec": {m: PUBLISHED[m] for m in args.method_list},
        "settings": {k: (str(v) if isinstance(v, Path) else v)
                     for k, v in overrides(args).items()},
        "records": str(args.records),
        "recorded_before": recorded,
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - t0,
        "methods": summary,
    })
    emit_json(result)
    return 0


if __name__ == "__main__":
    run_main(lambda: main(parse_args()))
