"""``llmhni data ...``: look at a data set."""

from __future__ import annotations

import json

import typer

app = typer.Typer(no_args_is_help=True)

DATA_HELP = "Data source: ml100k, rlmrec:PATH or files:PATH."


@app.command("info")
def info(
    data: str = typer.Option("ml100k", "--data", help=DATA_HELP),
    synthetic_noise: float = typer.Option(0.0, help="Share of random noise pairs added to training."),
    max_users: int = typer.Option(0, help="Keep only the first N users (0: all)."),
    seed: int = typer.Option(0, help="Seed of random splits and noise."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Counts, sparsity and the share of flagged noise of a data set."""
    from llmhni_local.config import build, DataSettings
    from llmhni_local.data import load_data

    settings = build(DataSettings, {"source": data, "synthetic_noise": synthetic_noise,
                                    "max_users": max_users, "seed": seed}, "data")
    summary = load_data(settings).info()
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
