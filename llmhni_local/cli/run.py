"""``llmhni run`` (the whole pipeline) and ``llmhni report`` (report.md and plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmhni_local.cli.options import ConfigOption, QuietOption, SetOption, run_config


def run(
    config: ConfigOption = None,
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (overrides pipeline.out)."),
    start: Optional[str] = typer.Option(None, "--from", help="Re-run from this stage on."),
    until: Optional[str] = typer.Option(None, "--until", help="Stop after this stage: a run "
                                        "folder prepared for `verdicts import` (data, ..., "
                                        "candidates); the later stages do not run."),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="Trainings run at once, each in "
                                       "its own process (pipeline.jobs; only the time changes)."),
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run every stage: data, profiles, embeddings, alignment, Rec_pre, candidates, tuning the
    rater (only with tune.kind), rating, verdicts, training, evaluation, report. Unchanged
    stages are reused; on data without item text the text stages are skipped (one line says
    so)."""
    from llmhni_local.core.runlock import run_lock
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.report import print_run_summary
    from llmhni_local.stages.plan import STAGES

    cfg = run_config(config, set_, {"pipeline.out": out, "pipeline.jobs": jobs})
    with run_lock(cfg.pipeline.out, "run"):
        result = run_pipeline(cfg, start=start, until=until, progress=not quiet)
    if until is None or until == STAGES[-1]:  # else the run said where it stopped
        print_run_summary(result.dir)


def report(run_dir: Path = typer.Argument(..., help="A pipeline run folder.")) -> None:
    """Write RUN/report.md with tables and PNG plots (training curves, score distributions,
    identification by candidate type)."""
    # No run lock: the report is read off finished results and written atomically, so it may
    # be made while another command works on the folder.
    import json

    from llmhni_local.core.config import build
    from llmhni_local.core.errors import UserError
    from llmhni_local.data import load_data
    from llmhni_local.report import print_run_summary, write_report
    from llmhni_local.stages.settings import RunConfig

    manifest = run_dir / "manifest.json"
    if not (run_dir / "results.json").is_file() or not manifest.is_file():
        raise UserError(f"{run_dir}: not a finished pipeline run (no results.json / manifest.json)")

    cfg = build(RunConfig, json.loads(manifest.read_text())["settings"])
    write_report(run_dir, load_data(cfg.data))
    print_run_summary(run_dir)
