"""Trainer parity and speed on the RLMRec split of Amazon-book.

Part 1 (parity): trains the project's LightGCN (dim 32, 3 layers, batch 4096, Adam lr 1e-3)
with the project's trainer, early-stopped on validation Recall@20 (the test set is read once,
at the best validation epoch), for several seeds, and prints mean ± std test Recall / NDCG @10
and @20 beside RLMRec's published LightGCN figures on the same split. Target: Recall@20 at
least 0.95 x 0.1411.

Part 2 (speed), in the same process and on the same data: seconds per training epoch (batch
4096, dim 32, 3 layers) of

- the project's trainer (``llmhni_local.train.trainer.fit``: CSR adjacency, symmetric
  propagation, rejection-sampled uniform negatives),
- a plain PyG-example-style LightGCN (``torch_geometric.nn.models.LightGCN`` over a COO
  ``edge_index``, full-graph propagation on every batch, BPR through its
  ``recommendation_loss``, uniform negatives as in PyG's ``examples/lightgcn.py``): the
  reference,
- the same PyG model fed a CSR adjacency (``torch_geometric.utils.to_torch_csr_tensor``).

The three are timed in interleaved rounds (one epoch of each per round, after one warm-up
round), so load from other processes on a shared machine falls on all of them alike; the
headline figure is the median over rounds. Target: the project's epoch at most 0.25 of COO's.
The speed part runs first: it is short and bounded, the parity part is not.

On a shared machine, ``--threads 1`` avoids the collapse of torch's multi-threaded kernels
under oversubscription (seen: a sparse product 4x slower with 2 threads than with 1 when the
2 cores carried a load of 10).

Usage::

    python bench/trainer_parity.py --quick           # a few epochs, 1 seed: shows it works
    python bench/trainer_parity.py --seeds 5         # the full comparison (RLMRec: 5 seeds)

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common, however this is run
from _common import (
    emit_json,
    fail,
    mean_std,
    median,
    print_table,
    require_dir,
    run_main,
    shared_path,
)

# RLMRec (Ren et al., WWW 2024), Table 2, LightGCN on its Amazon-book split: mean of 5 seeds,
# all-item ranking, dim 32 (bench/README.md, "trainer_parity.py").
REFERENCE = {"recall@10": 0.0915, "recall@20": 0.1411, "ndcg@10": 0.0694, "ndcg@20": 0.0856}
RECALL_TARGET = 0.95  # Recall@20 within 5% of the published figure, or above it
SPEED_TARGET = 0.25  # project epoch time at most this share of the COO reference
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
SPLIT_FILES = ("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl")


@dataclass(frozen=True)
class BenchSettings:
    """What the bench runs.

    Args:
        data: the RLMRec-format folder. (default: ``../shared/data/rlmrec-amazon``)
        seeds: training seeds of the parity part; 0 skips it. (default: ``5``, as RLMRec)
        first_seed: seeds are ``first_seed .. first_seed + seeds - 1``. (default: ``0``)
        epochs: maximum training epochs per seed. (default: ``1000``)
        eval_every: epochs between validation evaluations. (default: ``5``)
        patience: evaluations without a better validation Recall@20 before stopping.
            (default: ``10``, i.e. 50 epochs)
        min_epochs: never stop before this epoch. (default: ``50``)
        dim: embedding size. (default: ``32``, RLMRec's)
        layers: propagation layers. (default: ``3``, RLMRec's for Amazon)
        batch_size: positive pairs per batch. (default: ``4096``, RLMRec's)
        init: embedding initialisation, ``normal`` (std ``model.init_std``) or ``xavier``
            (RLMRec's); ``None`` keeps the project's default. (default: ``None``)
        lr: Adam learning rate. (default: ``1e-3``, RLMRec's)
        l2: weight of the project's L2 term on the batch's layer-0 embeddings.
            (default: ``1e-4``, the project's default)
        timing_rounds: timed epochs of each trainer in the speed part, after one warm-up
            round; 0 skips it. (default: ``3``)
        threads: torch CPU threads; 0 keeps torch's default. (default: ``0``)
        verbose: print a line per validation evaluation. (default: ``True``)
    """

    data: Path
    seeds: int = 5
    first_seed: int = 0
    epochs: int = 1000
    eval_every: int = 5
    patience: int = 10
    min_epochs: int = 50
    dim: int = 32
    layers: int = 3
    init: str | None = None
    batch_size: int = 4096
    lr: float = 1e-3
    l2: float = 1e-4
    timing_rounds: int = 3
    threads: int = 0
    verbose: bool = True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds of the parity part; 0 skips it (default 5; --quick: 1)")
    p.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs per seed (default 1000; --quick: 5)")
    p.add_argument("--data", type=Path, default=None,
                   help="RLMRec-format folder (default ../shared/data/rlmrec-amazon)")
    p.add_argument("--quick", action="store_true",
                   help="a few epochs, one seed, one timed round: shows that everything runs")
    p.add_argument("--first-seed", type=int, default=0, help="first training seed (default 0)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="epochs between validation evaluations (default 5)")
    p.add_argument("--patience", type=int, default=10,
                   help="evaluations without improvement before stopping (default 10)")
    p.add_argument("--min-epochs", type=int, default=None,
                   help="never stop before this epoch (default 50)")
    p.add_argument("--init", choices=["normal", "xavier"], default=None,
                   help="embedding initialisation (default: the project's, model.init; "
                        "RLMRec uses xavier)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--l2", type=float, default=1e-4,
                   help="L2 weight on the batch's layer-0 embeddings (default 1e-4)")
    p.add_argument("--timing-rounds", type=int, default=None,
                   help="timed epochs per trainer after one warm-up; 0 skips (default 3; --quick: 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads; 0 keeps torch's default (default 0)")
    p.add_argument("--quiet", action="store_true", help="no line per validation evaluation")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    def pick(value, full, quick):
        return value if value is not None else (quick if args.quick else full)

    s = BenchSettings(
        data=args.data if args.data is not None else shared_path("data", "rlmrec-amazon"),
        seeds=pick(args.seeds, 5, 1),
        first_seed=args.first_seed,
        epochs=pick(args.epochs, 1000, 5),
        eval_every=pick(args.eval_every, 5, 5),
        patience=args.patience,
        min_epochs=pick(args.min_epochs, 50, 0),
        init=args.init,
        lr=args.lr,
        l2=args.l2,
        timing_rounds=pick(args.timing_rounds, 3, 1),
        threads=args.threads,
        verbose=not args.quiet,
    )
    if s.seeds < 0 or s.epochs <= 0 or s.eval_every <= 0 or s.patience <= 0 or s.timing_rounds < 0:
        fail("--seeds and --timing-rounds must be >= 0; --epochs, --eval-every and --patience > 0")
    return s


# ---------------------------------------------------------------------------- part 1: parity
def train_config(s: BenchSettings, seed: int, epochs: int | None = None):
    """The project's ``TrainConfig`` for one run of this bench."""
    from llmhni_local.core.config import TrainConfig, load_config

    return load_config(TrainConfig, None, {
        "data.source": f"rlmrec:{s.data}",
        "model.name": "lightgcn",
        "model.dim": s.dim,
        "model.layers": s.layers,
        "model.init": s.init,
        "train.loss": "bpr",
        "train.epochs": epochs if epochs is not None else s.epochs,
        "train.batch_size": s.batch_size,
        "train.lr": s.lr,
        "train.l2": s.l2,
        "train.eval_every": s.eval_every,
        "train.patience": s.patience,
        "train.min_epochs": s.min_epochs,
        "train.seed": seed,
        "train.threads": s.threads,
        "eval.ks": [10, 20],
    })


def build_project(data, cfg):
    """Model and objective exactly as ``llmhni_local.train.run.train_run`` builds them."""
    from llmhni_local.models import build_model
    from llmhni_local.train.objectives import RecObjective
    from llmhni_local.train.trainer import seed_everything

    seed_everything(cfg.train.seed)  # initialisation is seeded, as in train_run
    m = cfg.model
    model = build_model(m.name, data.n_users, data.n_items, m.dim, m.layers, m.ngcf_dropout,
                        m.init, m.init_std)
    objective = RecObjective(data.train, data.n_users, data.n_items, cfg.train)
    return model, objective


def run_seed(data, s: BenchSettings, seed: int) -> dict:
    """Train one seed with the project's trainer; test metrics at the best validation epoch."""
    from llmhni_local.train.trainer import fit

    cfg = train_config(s, seed)
    model, objective = build_project(data, cfg)
    t0 = time.perf_counter()

    def on_eval(row: dict) -> None:
        if s.verbose:
            val = row["val"]
            print(f"  seed {seed} epoch {row['epoch']:4d}  loss {row['loss']:.4f}  "
                  f"val R@20 {val['recall@20']:.4f}  N@20 {val['ndcg@20']:.4f}  "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)

    result = fit(model, data, objective, train=cfg.train, eval=cfg.eval, progress=False,
                 on_eval=on_eval)
    wall = time.perf_counter() - t0
    # RLMRec masks only training items when testing (its AllRankTstData); the project also
    # masks validation items (docs/METHOD.md). Report both, so the comparison is like for like.
    import torch

    from llmhni_local.eval.ranking import evaluate_ranking

    with torch.no_grad():  # fit has loaded the best checkpoint into the model
        model.eval()
        u, i = model(objective.eval_adj())
    train_mask_only = evaluate_ranking(u, i, data.test, [data.train], ks=cfg.eval.ks,
                                       batch_users=cfg.eval.batch_users)
    print(f"seed {seed}: best epoch {result.best_epoch} of {result.epochs_run}; test "
          + "  ".join(f"{k} {result.test[k]:.4f}" for k in METRICS)
          + f"  ({result.epoch_seconds:.2f} s/epoch, {wall:.0f} s in all); "
          + f"masking training items only: recall@20 {train_mask_only['recall@20']:.4f}",
          flush=True)
    return {"seed": seed, "test": result.test, "test_train_mask_only": train_mask_only,
            "val": result.val,
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "epoch_seconds": result.epoch_seconds, "wall_seconds": wall}


def parity(data, s: BenchSettings) -> dict:
    """Part 1: several seeds; mean ± std of the test metrics beside RLMRec's."""
    m = train_config(s, s.first_seed).model
    init = f"{m.init} init" + (f" (std {m.init_std:g})" if m.init == "normal" else "")
    print(f"\n== Part 1: parity (LightGCN dim {s.dim}, {s.layers} layers, {init}, batch "
          f"{s.batch_size}, lr {s.lr:g}, l2 {s.l2:g}, up to {s.epochs} epochs, validation every "
          f"{s.eval_every}, patience {s.patience}, {s.seeds} seed(s)) ==", flush=True)
    runs = [run_seed(data, s, s.first_seed + k) for k in range(s.seeds)]
    out: dict = {}
    rows = []
    for key in METRICS:
        mean, std = mean_std([r["test"][key] for r in runs])
        ref = REFERENCE[key]
        out[f"{key}_mean"], out[f"{key}_std"] = mean, std
        out[f"{key}_ratio_to_rlmrec"] = mean / ref
        cell = f"{mean:.4f} ± {std:.4f}" if len(runs) > 1 else f"{mean:.4f} (1 seed)"
        rows.append([key, cell, ref, mean / ref])
    print_table(["test metric", f"project ({len(runs)} seed(s))", "RLMRec LightGCN", "ratio"],
                rows, title="Test metrics at the best validation Recall@20 epoch "
                            "(training and validation items masked)")
    for key in METRICS:
        mean, std = mean_std([r["test_train_mask_only"][key] for r in runs])
        out[f"{key}_mean_train_mask_only"] = mean
    print("same checkpoints, masking training items only (RLMRec's protocol): "
          + "  ".join(f"{k} {out[f'{k}_mean_train_mask_only']:.4f}" for k in METRICS), flush=True)
    out["per_seed"] = runs
    out["model"] = {"init": m.init, "init_std": m.init_std}
    out["recall_target_met"] = out["recall@20_mean"] >= RECALL_TARGET * REFERENCE["recall@20"]
    return out


# ---------------------------------------------------------------------------- part 2: speed
def pyg_graph(data):
    """The PyG example's homogeneous graph: users ``0..U-1``, items ``U..U+I-1``, both
    directions, as a COO ``edge_index``; and the same graph as a torch CSR tensor."""
    import warnings

    import torch
    from torch_geometric.utils import to_torch_csr_tensor

    u = torch.from_numpy(data.train[:, 0])
    i = torch.from_numpy(data.train[:, 1]) + data.n_users
    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    n = data.n_users + data.n_items
    with warnings.catch_warnings():  # torch's notice that CSR invariant checks are off
        warnings.simplefilter("ignore", UserWarning)
        csr = to_torch_csr_tensor(edge_index, size=(n, n))
    return edge_index, csr


class PygTrainer:
    """One epoch of PyG's ``examples/lightgcn.py`` loop on a given graph (COO or CSR)."""

    def __init__(self, data, graph, s: BenchSettings, seed: int) -> None:
        import torch
        from torch_geometric.nn.models import LightGCN as PygLightGCN

        torch.manual_seed(seed)
        self.data, self.graph, self.s = data, graph, s
        self.model = PygLightGCN(num_nodes=data.n_users + data.n_items, embedding_dim=s.dim,
                                 num_layers=s.layers)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=s.lr)
        self.users = torch.from_numpy(data.train[:, 0])
        self.items = torch.from_numpy(data.train[:, 1]) + data.n_users
        self.gen = torch.Generator().manual_seed(seed)

    def epoch(self) -> tuple[float, float]:
        """Train one epoch; return ``(seconds, mean loss)``."""
        import torch

        d, s = self.data, self.s
        t0 = time.perf_counter()
        self.model.train()
        total, n = 0.0, 0
        for index in torch.randperm(len(self.users), generator=self.gen).split(s.batch_size):
            src, dst = self.users[index], self.items[index]
            neg = torch.randint(d.n_users, d.n_users + d.n_items, (len(index),),
                                generator=self.gen)
            edge_label_index = torch.stack([torch.cat([src, src]), torch.cat([dst, neg])])
            self.opt.zero_grad()
            pos_rank, neg_rank = self.model(self.graph, edge_label_index).chunk(2)
            loss = self.model.recommendation_loss(pos_rank, neg_rank,
                                                  node_id=edge_label_index.unique())
            loss.backward()
            self.opt.step()
            total += float(loss.detach()) * len(index)
            n += len(index)
        return time.perf_counter() - t0, total / max(1, n)


class ProjectTrainer:
    """One epoch of the project's trainer: ``fit`` run for a single epoch, which times its own
    training loop (negative sampling included, the validation / test evaluation that ``fit``
    runs after it excluded). Each call starts a fresh Adam state: this changes the losses a
    little, not the cost of an epoch."""

    def __init__(self, data, s: BenchSettings, seed: int) -> None:
        self.data, self.s = data, s
        self.cfg = train_config(s, seed, epochs=1)
        self.model, self.objective = build_project(data, self.cfg)

    def epoch(self) -> tuple[float, float]:
        from llmhni_local.train.trainer import fit

        r = fit(self.model, self.data, self.objective, train=self.cfg.train, eval=self.cfg.eval,
                progress=False)
        return r.epoch_seconds, r.history[-1]["loss"]


def propagation_gap(data, s: BenchSettings, edge_index, csr) -> dict[str, float]:
    """Largest absolute difference between the project's final embeddings and PyG's (COO and
    CSR) for the same layer-0 weights: the three trainers time the same model."""
    import torch
    from torch_geometric.nn.models import LightGCN as PygLightGCN

    cfg = train_config(s, 0, epochs=1)
    model, objective = build_project(data, cfg)
    pyg = PygLightGCN(num_nodes=data.n_users + data.n_items, embedding_dim=s.dim,
                      num_layers=s.layers)
    with torch.no_grad():
        pyg.embedding.weight.copy_(model.embedding.weight)
        u, i = model(objective.adj)
        ours = torch.cat([u, i])
        return {"coo": float((pyg.get_embedding(edge_index) - ours).abs().max()),
                "csr": float((pyg.get_embedding(csr) - ours).abs().max()),
                "scale": float(ours.abs().max())}


def speed(data, s: BenchSettings) -> dict:
    """Part 2: seconds per training epoch of the three trainers, interleaved rounds."""
    print(f"\n== Part 2: speed (s/epoch, batch {s.batch_size}, dim {s.dim}, {s.layers} layers; "
          f"1 warm-up + {s.timing_rounds} timed round(s), interleaved) ==", flush=True)
    edge_index, csr = pyg_graph(data)
    gap = propagation_gap(data, s, edge_index, csr)
    print(f"same model: max |project - PyG| of final embeddings: COO {gap['coo']:.2e}, "
          f"CSR {gap['csr']:.2e} (largest entry {gap['scale']:.2e})", flush=True)
    trainers = {
        "project": ProjectTrainer(data, s, s.first_seed),
        "pyg_coo": PygTrainer(data, edge_index, s, s.first_seed),
        "pyg_csr": PygTrainer(data, csr, s, s.first_seed),
    }
    times: dict[str, list[float]] = {k: [] for k in trainers}
    losses: dict[str, list[float]] = {k: [] for k in trainers}
    for rnd in range(s.timing_rounds + 1):
        for name, trainer in trainers.items():
            sec, loss = trainer.epoch()
            print(f"  round {rnd}{' (warm-up)' if rnd == 0 else ''}: {name:8s} {sec:7.3f} s  "
                  f"loss {loss:.4f}", flush=True)
            if rnd > 0:
                times[name].append(sec)
                losses[name].append(loss)
    med = {k: median(v) for k, v in times.items()}
    coo = med["pyg_coo"]
    labels = {"project": "project trainer (fit, CSR, symmetric propagate)",
              "pyg_coo": "PyG LightGCN, COO edge_index (reference)",
              "pyg_csr": "PyG LightGCN, torch CSR adjacency"}
    rows = [[labels[k], med[k], float(np.mean(times[k])), med[k] / coo] for k in trainers]
    print_table(["trainer", "s/epoch (median)", "s/epoch (mean)", "ratio to COO"], rows,
                title="Seconds per training epoch")
    return {
        "epoch_s_project": med["project"],
        "epoch_s_pyg_coo": coo,
        "epoch_s_pyg_csr": med["pyg_csr"],
        "ratio_project_to_coo": med["project"] / coo,
        "ratio_csr_to_coo": med["pyg_csr"] / coo,
        "speed_target_met": med["project"] / coo <= SPEED_TARGET,
        "epoch_times": times,
        "propagation_max_abs_diff": {"coo": gap["coo"], "csr": gap["csr"]},
    }


# ---------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    require_dir(s.data, "RLMRec data folder", SPLIT_FILES)
    import torch

    from llmhni_local.data.rlmrec import load_rlmrec

    if s.threads > 0:
        torch.set_num_threads(s.threads)
    data = load_rlmrec(s.data)
    info = data.info()
    print(f"data: {s.data} ({info['users']} users, {info['items']} items; "
          f"{info['train']} / {info['val']} / {info['test']} train / val / test); "
          f"torch threads {torch.get_num_threads()}", flush=True)

    t0 = time.perf_counter()
    result: dict = {}
    # Speed first: it is short and bounded, so its figures exist even if a long parity run
    # is cut off.
    if s.timing_rounds > 0:
        result.update(speed(data, s))
    if s.seeds > 0:
        result.update(parity(data, s))
    result.update({
        "seeds": s.seeds,
        "quick": bool(args.quick),
        "reference_rlmrec": REFERENCE,
        "targets": {"recall@20_min": RECALL_TARGET * REFERENCE["recall@20"],
                    "ratio_project_to_coo_max": SPEED_TARGET},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()},
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - t0,
    })
    # The figures the issue names come first on the JSON line; details (per seed, raw
    # timings) after them.
    head = [f"{k}_{stat}" for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")
            for stat in ("mean", "std")]
    head += ["epoch_s_project", "epoch_s_pyg_coo", "epoch_s_pyg_csr", "ratio_project_to_coo",
             "ratio_csr_to_coo", "recall_target_met", "speed_target_met", "seeds"]
    ordered = {k: result[k] for k in head if k in result}
    ordered.update({k: v for k, v in result.items() if k not in ordered})
    emit_json(ordered)
    return 0


if __name__ == "__main__":
    run_main(lambda: main(parse_args()))
