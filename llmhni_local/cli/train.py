"""``llmhni train``: train a graph recommender and write its run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmhni_local.cli.options import ConfigOption, DataOption, QuietOption, SetOption, load


def train(
    out: Path = typer.Option(..., "--out", help="Run folder to write (metrics.json, manifest.json, ...)."),
    data: DataOption = None,
    model: Optional[str] = typer.Option(None, "--model", help="lightgcn or ngcf."),
    config: ConfigOption = None,
    set_: SetOption = None,
    loss: Optional[str] = typer.Option(None, "--loss", help="bpr, tce, rce or sgl."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Embedding size."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Propagation layers."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Positive pairs per batch."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate."),
    l2: Optional[float] = typer.Option(None, "--l2", help="L2 weight on layer-0 embeddings."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Epochs between validations."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Validations without gain before stopping."),
    min_epochs: Optional[int] = typer.Option(None, "--min-epochs", help="Never stop before this epoch."),
    synthetic_noise: Optional[float] = typer.Option(None, "--synthetic-noise", help="Share of random noise pairs added to training."),
    max_users: Optional[int] = typer.Option(None, "--max-users", help="Keep only the first N users."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (0: default)."),
    quiet: QuietOption = False,
) -> None:
    """Train LightGCN or NGCF and print clean-test metrics (settings: --set > flags > --config
    > defaults)."""
    from llmhni_local.core.config import TrainConfig

    overrides = {
        "data.source": data, "data.synthetic_noise": synthetic_noise, "data.max_users": max_users,
        "model.name": model, "model.dim": dim, "model.layers": layers,
        "train.loss": loss, "train.seed": seed, "train.epochs": epochs,
        "train.batch_size": batch_size, "train.lr": lr, "train.l2": l2,
        "train.eval_every": eval_every, "train.patience": patience,
        "train.min_epochs": min_epochs, "train.threads": threads,
    }
    cfg = load(TrainConfig, config, set_, overrides)

    from llmhni_local.core.runlock import run_lock
    from llmhni_local.data import load_data
    from llmhni_local.report import print_metrics
    from llmhni_local.train.run import train_run

    with run_lock(out, "train"):
        dataset = load_data(cfg.data)
        result = train_run(cfg, dataset, out, progress=not quiet)
    print_metrics(f"{cfg.model.name} ({cfg.train.loss}) on {dataset.name}", result, out)
