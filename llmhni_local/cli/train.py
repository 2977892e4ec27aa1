"""``llmhni train``: train a graph recommender and write its run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmhni_local.cli.options import ConfigOption, DataOption, QuietOption, SetOption


#: Kept as text so ``--help`` imports no torch; tests/stages/test_methods.py checks it names
#: every row of the method table.
METHOD_HELP = ("A row of the method table (docs/BASELINES.md): bpr, wbpr, dns, tce, rce, bod, sgl, "
               "simgcl, xsimgcl, rlmrec-con, rlmrec-gen, bpr-gprime, llmhni, llmhni-no-semneg, "
               "llmhni-no-align, llmhni-no-denoise, llmhni-no-hal, llmhni-dns, oracle (default: "
               "train.loss, bpr).")


def train(
    out: Path = typer.Option(..., "--out", help="Run folder to write (metrics.json, manifest.json, ...)."),
    method: Optional[str] = typer.Option(None, "--method", help=METHOD_HELP),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="Pipeline run folder whose verdicts or profile embeddings the method reads (llmhni, bpr-gprime, rlmrec-*); its settings and data are used."),
    data: DataOption = None,
    model: Optional[str] = typer.Option(None, "--model", help="lightgcn or ngcf."),
    config: ConfigOption = None,
    set_: SetOption = None,
    loss: Optional[str] = typer.Option(None, "--loss", help="Shorthand of --method for the plain losses: bpr, tce, rce or sgl."),
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
    """Train one method (a baseline, LLMHNI or the oracle) on LightGCN or NGCF and print
    clean-test metrics (settings: --set > flags > --config > defaults; with --run, the run's
    settings instead of --config)."""
    from llmhni_local.core.errors import ConfigError

    if method and loss and method != loss:
        raise ConfigError(f"--method {method} and --loss {loss} disagree (--loss is a "
                          "shorthand of --method; give one)")
    data_flags = {"data.source": data, "data.synthetic_noise": synthetic_noise,
                  "data.max_users": max_users}
    overrides = {
        "model.name": model, "model.dim": dim, "model.layers": layers,
        "train.loss": loss, "train.seed": seed, "train.epochs": epochs,
        "train.batch_size": batch_size, "train.lr": lr, "train.l2": l2,
        "train.eval_every": eval_every, "train.patience": patience,
        "train.min_epochs": min_epochs, "train.threads": threads,
    }
    from llmhni_local.stages.methods import METHOD_TABLE

    name = method or loss
    if name is not None and name not in METHOD_TABLE:
        raise ConfigError(f"--method: unknown method {name!r} (known: {', '.join(METHOD_TABLE)})")
    if run_dir is not None:
        given = [k for k, v in data_flags.items() if v is not None]
        if config is not None or given:
            raise ConfigError(f"--run {run_dir} trains on that run's data and settings; "
                              f"drop {'--config' if config is not None else given[0]}")
        from llmhni_local.core.config import parse_sets
        from llmhni_local.stages.settings import settings_of_run

        cfg = settings_of_run(run_dir, {**overrides, **parse_sets(set_ or [])})
    else:
        from llmhni_local.cli.options import run_config

        cfg = run_config(config, set_, {**data_flags, **overrides})
    name = name or cfg.train.loss
    spec = METHOD_TABLE[name]
    if spec.needs_run and run_dir is None:
        reads = "verdicts" if spec.reads_verdicts else "profile embeddings"
        raise ConfigError(f"{name} reads a pipeline run's {reads}: give --run RUN (a folder "
                          "`llmhni run` made)")

    from llmhni_local.core.runlock import run_lock
    from llmhni_local.report import print_metrics
    from llmhni_local.stages.context import Run
    from llmhni_local.stages.methods import check_methods, check_run_inputs, train_method

    run = Run(cfg, progress=not quiet)
    check_methods([name], run.data)
    check_run_inputs(run, name)
    with run_lock(out, "train"):
        result = train_method(run, name, cfg.train.seed, out)
    print_metrics(f"{cfg.model.name} ({name}) on {run.data.name}", result, out)
