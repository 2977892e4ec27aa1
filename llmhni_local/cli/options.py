"""Options every settings-reading command shares, declared once.

Priority, on every command: ``--set table.key=value`` > the command's own flags > the TOML
file given with ``--config`` > the defaults of the settings classes. One TOML file serves
every command: a command skips the tables that belong to other commands and rejects any other
unknown table or key, naming it and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML settings file, one table per stage (flags and --set override it).")]
SetOption = Annotated[Optional[List[str]], typer.Option(
    "--set", help="Override any setting: table.key=value, the value in TOML (repeatable).")]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def _data_help() -> str:
    from llmhni_local.data import source_help

    return f"Data source (data.source): {source_help()}."


DataOption = Annotated[Optional[str], typer.Option("--data", help=_data_help())]


def known_tables() -> frozenset[str]:
    """Every table a settings file of this toolkit may hold."""
    import dataclasses

    from llmhni_local.stages.settings import OTHER_TABLES, RunConfig

    return frozenset(f.name for f in dataclasses.fields(RunConfig)) | frozenset(OTHER_TABLES)


def load(cls: type, config: Optional[Path], sets: Optional[list[str]],
         flags: dict[str, Any] | None = None) -> Any:
    """Settings of type ``cls``: defaults < ``config`` < ``flags`` (dotted; None = not given)
    < ``--set`` items."""
    import dataclasses

    from llmhni_local.core.config import load_config, parse_sets

    own = {f.name for f in dataclasses.fields(cls)}
    overrides = {**(flags or {}), **parse_sets(sets or [])}
    return load_config(cls, config, overrides, ignore=known_tables() - own)


def run_config(config: Optional[Path], sets: Optional[list[str]],
               flags: dict[str, Any] | None = None):
    """The pipeline's settings (:class:`llmhni_local.stages.settings.RunConfig`); the LLM stage
    commands read their tables from it."""
    from llmhni_local.stages.settings import RunConfig

    return load(RunConfig, config, sets, flags)
