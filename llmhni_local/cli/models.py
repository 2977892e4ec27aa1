"""``llmhni models list|prepare``: the model registry on the command line.

Mounted as ``llmhni models``. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

app = typer.Typer(help="List and prepare the local models (no hub is ever contacted).",
                  no_args_is_help=True, add_completion=False)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def model_rows() -> list[dict[str, object]]:
    """One row per registry entry: name, role, path, size, sha256, prepared."""
    from llmhni_local.llm.registry import KNOWN, folder_size, model_hash

    rows = []
    for entry in KNOWN.values():
        source = entry.source()
        path = entry.path()
        ready = source is not None and path.is_dir() and (
            not entry.needs_prepare or (path / "llmhni_source.json").is_file())
        rows.append({
            "name": entry.name, "role": entry.role, "description": entry.description,
            "path": str(path) if source is not None else f"(package {entry.package} not installed)",
            "prepared": ready,
            "size": folder_size(path) if ready else None,
            "sha256": model_hash(path) if ready else None,
            "source": str(source) if source is not None else None,
        })
    return rows


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Show each known model: name, path, size, sha256 (cached), prepared or not."""
    rows = model_rows()
    if as_json:
        typer.echo(json.dumps({"models": rows}, indent=2))
        return
    for r in rows:
        if r["prepared"]:
            state = "prepared"
        elif r["source"]:
            state = f"NOT PREPARED (run: python cli.py models prepare {r['name']})"
        else:
            state = "NOT INSTALLED"
        size = _size(int(r["size"])) if r["size"] is not None else "-"
        digest = str(r["sha256"] or "-")
        typer.echo(f"{r['name']:<8} {r['role']:<8} {size:>9}  sha256 {digest}  {state}\n"
                   f"         {r['path']}")


@app.command("prepare")
def prepare(
    models: Optional[list[str]] = typer.Argument(
        None, help="Registry names or .gguf files (default: every registry model)."),
    force: bool = typer.Option(False, "--force", help="Convert again even when prepared."),
) -> None:
    """Make models usable offline: convert GGUF files once into Hugging Face folders."""
    from llmhni_local.llm.registry import KNOWN, model_hash, prepare_model

    for name in models or list(KNOWN):
        typer.echo(f"{name}: preparing ...")
        spec = prepare_model(name, force=force)
        typer.echo(f"{name}: ready at {spec.path} (sha256 {model_hash(spec.path)[:12]})")
