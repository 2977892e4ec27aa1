"""The ``llmhni`` command line: one typer app, one module per command group.

Heavy imports (torch, vLLM, transformers) happen inside commands so ``--help`` is instant.
A :class:`~llmhni_local.core.errors.UserError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

import typer

from llmhni_local.core.errors import UserError

app = typer.Typer(
    name="llmhni",
    help="Offline LLM-assisted denoising of recommender training data (LLMHNI).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount() -> None:
    from llmhni_local.cli import data, run, train

    app.command("run")(run.run)
    app.command("report")(run.report)
    app.command("train")(train.train)
    app.add_typer(data.app, name="data", help="Inspect data sets.")
    from llmhni_local.cli import audit, finetune, llm, models, rater

    llm.mount(app)
    app.add_typer(models.app, name="models")
    app.add_typer(audit.app, name="audit")
    app.command("finetune-rater")(finetune.finetune_rater)
    app.add_typer(finetune.adapters_app, name="adapters")
    app.add_typer(rater.app, name="rater")


_mount()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``llmhni`` and ``python cli.py``.

    SIGTERM and SIGINT close every open backend and end the engine processes they started
    before the process exits (``core/closing.py``): a stopped run leaves nothing running."""
    from llmhni_local.core.closing import finished, install_stop_handlers

    install_stop_handlers()
    try:
        app(args=argv, standalone_mode=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        finished()
