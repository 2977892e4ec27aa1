"""``llmhni run`` (the whole pipeline) and ``llmhni report`` (report.md and plots)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def run(
    config: Optional[Path] = typer.Option(None, "--config", help="TOML settings (e.g. configs/ml100k.toml)."),
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (overrides pipeline.out)."),
    start: Optional[str] = typer.Option(None, "--from", help="Re-run from this stage on."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a setting: table.key=value (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run every stage: data, profiles, embeddings, alignment, Rec_pre, candidates, rating,
    verdicts, training, evaluation, report. Unchanged stages are reused."""
    from llmhni_local.pipeline import load_run_config, run_pipeline
    from llmhni_local.report import print_run_summary

    overrides = _parse_sets(set_ or [])
    if out is not None:
        overrides["pipeline.out"] = out
    cfg = load_run_config(config, overrides)
    result = run_pipeline(cfg, start=start, progress=not quiet)
    print_run_summary(result.dir)


def report(run_dir: Path = typer.Argument(..., help="A pipeline run folder.")) -> None:
    """Write RUN/report.md with tables and PNG plots (training curves, score distributions,
    identification by candidate type)."""
    import json

    from llmhni_local.errors import UserError
    from llmhni_local.pipeline import load_run_config
    from llmhni_local.report import print_run_summary, write_report

    manifest = run_dir / "manifest.json"
    if not (run_dir / "results.json").is_file() or not manifest.is_file():
        raise UserError(f"{run_dir}: not a finished pipeline run (no results.json / manifest.json)")
    from llmhni_local.config import build
    from llmhni_local.pipeline import RunConfig
    from llmhni_local.data import load_data

    cfg = build(RunConfig, json.loads(manifest.read_text())["settings"])
    write_report(run_dir, load_data(cfg.data))
    print_run_summary(run_dir)


def _parse_sets(items: list[str]) -> dict:
    import tomllib

    from llmhni_local.errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected table.key=value")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare string
        out[key.strip()] = value
    return out
