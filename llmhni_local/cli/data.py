"""``llmhni data ...``: look at a data set."""

from __future__ import annotations

import json
from typing import Optional

import typer

from llmhni_local.cli.options import ConfigOption, DataOption, SetOption

app = typer.Typer(no_args_is_help=True)


@app.command("info")
def info(
    data: DataOption = None,
    synthetic_noise: Optional[float] = typer.Option(None, help="Share of random noise pairs added to training."),
    max_users: Optional[int] = typer.Option(None, help="Keep only the first N users (0: all)."),
    seed: Optional[int] = typer.Option(None, help="Seed of random splits and noise."),
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Counts, sparsity and the share of flagged noise of a data set."""
    from llmhni_local.cli.options import load
    from llmhni_local.core.config import TrainConfig
    from llmhni_local.data import load_data

    cfg = load(TrainConfig, config, set_, {"data.source": data, "data.max_users": max_users,
                                           "data.synthetic_noise": synthetic_noise,
                                           "data.seed": seed})
    summary = load_data(cfg.data).info()
    if as_json:
        print(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data: {summary['name']}", show_header=False)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        table.add_row(key, str(value))
    Console().print(table)
