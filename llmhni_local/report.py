"""Tables printed at the end of commands (and, later, report.md with plots)."""

from __future__ import annotations

from pathlib import Path


def print_metrics(title: str, result, out: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("split")
    keys = list(result.test)
    for k in keys:
        table.add_column(k, justify="right")
    table.add_row(f"val (best epoch {result.best_epoch})", *(f"{result.val.get(k, float('nan')):.4f}" for k in keys))
    table.add_row("test", *(f"{result.test[k]:.4f}" for k in keys))
    console = Console()
    console.print(table)
    console.print(f"{result.epochs_run} epochs, {result.epoch_seconds:.2f} s/epoch"
                  + (f"; run folder: {out}" if out else ""))
