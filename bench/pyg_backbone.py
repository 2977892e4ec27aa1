"""Epoch time of the toolkit's CSR LightGCN against PyG's LightGCN trained through
``models.PyGBackbone``, on MovieLens-100K, by the same trainer and objective.

Three backbones start from the same embeddings and train with the same seed (BPR, dim 64,
3 layers, batch 2048 by default): ours (CSR, symmetric backward), PyG's ``LightGCN`` given a
COO ``edge_index`` (what a PyG user passes), and PyG's ``LightGCN`` given the CSR tensor.
Rounds are interleaved; the figure is the median epoch time per backbone and its ratio to
ours. The final losses show that the three trained the same model.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import emit_json, median, print_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per round (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--dim", type=int, default=64, help="embedding size (default 64)")
    p.add_argument("--layers", type=int, default=3, help="propagation layers (default 3)")
    p.add_argument("--batch-size", type=int, default=2048, help="batch size (default 2048)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads; 0 keeps torch's default (default 0)")
    return p.parse_args(argv)


def backbones(data, args):
    """The three backbones, all starting from our LightGCN's initial embeddings."""
    import torch

    from llmhni_local.models import LightGCN, pyg_lightgcn

    torch.manual_seed(0)
    ours = LightGCN(data.n_users, data.n_items, args.dim, args.layers)
    out = {"ours_csr": ours}
    for name, sparse in (("pyg_coo", False), ("pyg_csr", True)):
        m = pyg_lightgcn(data.n_users, data.n_items, args.dim, args.layers, sparse=sparse)
        with torch.no_grad():
            m.table.weight.copy_(ours.embedding.weight)
        out[name] = m
    return out


def main(args: argparse.Namespace) -> None:
    import copy

    from llmhni_local.core.config import DataSettings, EvalSettings, TrainSettings
    from llmhni_local.data import load_data
    from llmhni_local.train.objectives import RecObjective
    from llmhni_local.train.trainer import fit

    data = load_data(DataSettings(source="ml100k"))
    train = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, eval_every=10**6,
                          min_epochs=0, threads=args.threads)
    start = backbones(data, args)
    times: dict[str, list[float]] = {k: [] for k in start}
    losses: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, model in start.items():
            objective = RecObjective(data.train, data.n_users, data.n_items, train)
            r = fit(copy.deepcopy(model), data, objective, train=train,
                    eval=EvalSettings(ks=(20,)), progress=False)
            times[name].append(r.epoch_seconds)
            losses[name] = r.history[-1]["loss"]
    med = {k: median(v) for k, v in times.items()}
    rows = [[k, med[k], med[k] / med["ours_csr"], losses[k]] for k in start]
    print_table(["backbone", "s/epoch (median)", "x ours", f"loss after {args.epochs} epochs"],
                rows, title=f"MovieLens-100K, {len(data.train)} training edges")
    emit_json({"epoch_s": med, "ratio_to_ours": {k: med[k] / med["ours_csr"] for k in med},
               "final_loss": losses, "epochs": args.epochs, "rounds": args.rounds})


if __name__ == "__main__":
    main(parse_args())
