"""``llmhni audit export|import|report|simulate``: the human audit of a run's judgments."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from llmhni_local.core.errors import UserError
from llmhni_local.core.runlock import run_lock

app = typer.Typer(no_args_is_help=True, help="Audit the rater: export pairs, import labels, "
                                             "report agreement, simulate labels (MovieLens).")
RUN_HELP = "Run folder (profiles/, candidates.parquet, judgments.sqlite, rating.json)."
MAX_SHOWN = 50  # bad rows printed on the terminal; all of them go to RUN/audit/rejected.txt


@app.command("export")
def export(
    run: Path = typer.Argument(..., help=RUN_HELP),
    n: int = typer.Option(300, "--n", help="Pairs to sample."),
    out: Path = typer.Option(..., "--out", help="File to write: .csv or .jsonl."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and its row order."),
    show_model_labels: bool = typer.Option(
        False, "--show-model-labels",
        help="Add the model's labels and verdict (off: pre-filled labels anchor annotators)."),
    allocation: str = typer.Option("proportional", "--allocation",
                                   help="proportional (estimates the whole set) or equal "
                                        "(same count per kind x verdict stratum)."),
    include_audited: bool = typer.Option(False, "--include-audited",
                                         help="Offer pairs that already have an audited label."),
) -> None:
    """Sample rated pairs (stratified by kind x verdict) with profiles, for people to label."""
    from llmhni_local.audit.export import export_sample, write_table

    if allocation not in ("proportional", "equal"):
        raise UserError(f"audit export: --allocation must be proportional or equal, got "
                        f"{allocation!r}")
    frame, info = export_sample(run, n, seed=seed, show_model_labels=show_model_labels,
                                allocation=allocation, include_audited=include_audited)
    write_table(frame, out)
    drawn = ", ".join(f"{k} {v}/{info['strata'][k]}" for k, v in info["drawn"].items())
    print(f"audit export: {len(frame)} pairs -> {out} ({drawn}); fill the 'label' column with "
          f"High, Medium or Low, then `audit import {run} {out}`")


@app.command("import")
def import_(
    run: Path = typer.Argument(..., help=RUN_HELP),
    file: Path = typer.Argument(..., help="Labelled file (.csv or .jsonl) with user, item, label "
                                          "(and optionally annotator, labelled_at, note)."),
) -> None:
    """Check every row, then store the labels (all of them, or none if any row is bad)."""
    from llmhni_local.audit.importer import ImportRefused, import_labels

    with run_lock(run, "audit import"):
        try:
            result = import_labels(run, file)
        except ImportRefused as exc:
            _print_problems(run, exc.problems)
            raise
    how = " (simulated)" if result.simulated else ""
    print(f"audit import: {result.rows} labels stored{how} (High {result.labels['High']}, Medium "
          f"{result.labels['Medium']}, Low {result.labels['Low']}); {result.replaced} replaced "
          f"earlier labels of the same pairs")


def _print_problems(run: Path, problems: list[str]) -> None:
    from llmhni_local.audit.records import audit_dir
    from llmhni_local.core.io import write_text

    for p in problems[:MAX_SHOWN]:
        print(f"  {p}", file=sys.stderr)
    if len(problems) > MAX_SHOWN:
        print(f"  ... and {len(problems) - MAX_SHOWN} more", file=sys.stderr)
    try:
        path = audit_dir(run) / "rejected.txt"
        write_text(path, "\n".join(problems) + "\n")
        print(f"  (every bad row is listed in {path})", file=sys.stderr)
    except OSError:
        pass


@app.command("report")
def report(
    run: Path = typer.Argument(..., help=RUN_HELP),
    max_listed: int = typer.Option(30, "--max-listed",
                                   help="Disagreements listed in report.md per rater."),
) -> None:
    """Agreement of every rater with the audited labels -> RUN/audit/report.md (+ PNG)."""
    from llmhni_local.audit.records import audit_dir
    from llmhni_local.audit.report import write_report

    result = write_report(run, max_listed=max_listed)
    sim = " (SIMULATED labels)" if result["simulated"] else ""
    print(f"audit report: {result['evaluated_pairs']} audited pairs{sim}, "
          f"{result['excluded_finetune_pairs']} left out (they trained an adapter)")
    for r in result["raters"]:
        v = r["views"]
        name = r["model_id"]
        print(f"  {name}: kappa user {_f(v['user']['kappa'])}, item {_f(v['item']['kappa'])}, "
              f"verdict {_f(v['verdict']['kappa'])}; accuracy verdict "
              f"{_f(v['verdict']['accuracy'])}")
    print(f"  -> {audit_dir(run) / 'report.md'}")


def _f(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


@app.command("simulate")
def simulate(
    run: Path = typer.Argument(..., help=RUN_HELP),
    n: int = typer.Option(300, "--n", help="Pairs to label."),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Label file to write (default "
                                            "RUN/audit/simulated.csv)."),
    pool: str = typer.Option("candidates", "--pool",
                             help="candidates (observed candidates the rater rated) or train "
                                  "(training pairs that are not candidates, for fine-tuning)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
    data: Optional[str] = typer.Option(None, "--data", help="The run's data if the run does not "
                                                            "record it (ml100k)."),
    max_users: Optional[int] = typer.Option(None, "--max-users", help="With --data."),
    no_import: bool = typer.Option(False, "--no-import", help="Only write the file."),
) -> None:
    """Label pairs from MovieLens TRAINING ratings (>=4 High, 3 Medium, <=2 Low) and import."""
    from llmhni_local.audit.export import write_table
    from llmhni_local.audit.importer import import_labels
    from llmhni_local.audit.records import audit_dir
    from llmhni_local.audit.simulated_audits import simulate_sample

    if pool not in ("candidates", "train"):
        raise UserError(f"audit simulate: --pool must be candidates or train, got {pool!r}")
    settings = None
    if data is not None:
        from llmhni_local.core.config import DataSettings

        settings = DataSettings(source=data, max_users=max_users or 0)
    with run_lock(run, "audit simulate"):
        frame, info = simulate_sample(run, n, pool=pool, seed=seed, data_settings=settings)
        out = out or audit_dir(run) / "simulated.csv"
        write_table(frame, out)
        lab = info["labels"]
        print(f"audit simulate: {info['pairs']} pairs labelled from training ratings (SIMULATED: "
              f"High {lab['High']}, Medium {lab['Medium']}, Low {lab['Low']}) -> {out}")
        if not no_import:
            result = import_labels(run, out)
            print(f"audit import: {result.rows} simulated labels stored; {result.replaced} "
                  "replaced")
