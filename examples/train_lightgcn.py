"""Train LightGCN with BPR on a data set and print its clean-test Recall@20 and NDCG@20.

This is what ``python cli.py train`` does, as library calls: settings, data, one training run
written to a run folder (metrics.json, model.pt, ...). The test split is evaluated once, at the
epoch validation chose, with every item ranked and the user's training items masked.

Run it:

    python examples/train_lightgcn.py                              # MovieLens-100K, 150 epochs
    python examples/train_lightgcn.py --epochs 20 --max-users 200  # a quick look
    python examples/train_lightgcn.py --data files:my_log.csv      # columns user, item[, rating]
"""

import argparse
import tempfile

from llmhni_local.core.config import TrainConfig, load_config
from llmhni_local.data import load_data
from llmhni_local.train.run import train_run


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ml100k", help="ml100k, files:PATH or rlmrec:PATH")
    p.add_argument("--max-users", type=int, default=0, help="keep the first N users (0: all)")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    return p.parse_args()


def main(args: argparse.Namespace) -> None:
    # Defaults < overrides, the same loader every command uses (a TOML path may go first).
    cfg = load_config(TrainConfig, None, {
        "data.source": args.data, "data.max_users": args.max_users,
        "model.name": "lightgcn", "model.dim": args.dim, "train.loss": "bpr",
        "train.epochs": args.epochs, "train.lr": args.lr,
        "train.min_epochs": min(20, args.epochs), "train.patience": 4,
        "train.eval_every": min(5, args.epochs),
    })
    data = load_data(cfg.data)
    print(f"data: {data.name}, {data.n_users} users, {data.n_items} items, "
          f"{len(data.train)} training interactions")
    out = args.out or tempfile.mkdtemp(prefix="lightgcn-")
    result = train_run(cfg, data, out, progress=False)
    print(f"best epoch {result.best_epoch} of {result.epochs_run}; run folder {out}")
    print(f"test Recall@20 {result.test['recall@20']:.4f}")
    print(f"test NDCG@20 {result.test['ndcg@20']:.4f}")


if __name__ == "__main__":
    main(parse_args())
