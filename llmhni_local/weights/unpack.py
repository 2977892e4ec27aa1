"""A model folder out of a verified zip, written atomically: what ``models install`` does with
an archive model's joined parts (``weights/install.py``), and the folder swap every prepared
model folder uses (``weights/registry.py: prepare_gguf``).

The zip's own sha256 is checked before this runs; here each member must lie inside the model's
folder (none may climb out of it), stray ``desktop.ini`` files are dropped, the named files'
sha256 are checked, and the folder appears whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import write_json
from llmhni_local.core.progress import progress_bar

CHUNK = 1 << 20  # bytes read at a time while joining or unpacking; the bars count these
SOURCE_FILE = "llmhni_source.json"  # written into a model folder the toolkit made: its origin


class BadFile(UserError):
    """A file the archive must hold is missing, or its sha256 is not the published one."""


def _members(name: str, folder: str, zf: zipfile.ZipFile,
             archive: Path) -> list[tuple[zipfile.ZipInfo, str]]:
    """``(member, path inside the model folder)`` of every file to unpack; refuses a member
    outside ``folder`` or one that climbs out of it, and skips ``desktop.ini``."""
    prefix = folder.strip("/") + "/"
    out = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        member = info.filename
        rel = member[len(prefix):] if member.startswith(prefix) else None
        parts = Path(rel).parts if rel else ()
        if rel is None or member.startswith("/") or ".." in parts or "\\" in member:
            raise UserError(f"{name}: {archive.name} holds {member!r}, outside its model "
                            f"folder {prefix}: refused")
        if parts[-1].lower() == "desktop.ini":  # a desktop's folder settings, not the model's
            continue
        out.append((info, rel))
    return out


def unpack_folder(archive: Path, dest: Path, *, name: str, folder: str,
                  files: tuple[tuple[str, str], ...], max_seq_length: int | None,
                  marker: dict[str, Any], show: bool = True) -> Path:
    """Unpack ``folder`` of the zip ``archive`` into ``dest``, atomically; returns ``dest``.

    Args:
        archive: the verified zip.
        dest: the model folder to make (replaced only once the new one is whole).
        name: the model's name, first in every message.
        folder: the folder inside the zip that holds the model.
        files: ``(path in the folder, sha256)`` pairs that must be there and match
            (:class:`BadFile`, one line naming the file, otherwise).
        max_seq_length: written into ``sentence_bert_config.json`` when lower than the
            folder's own; ``None``: as shipped.
        marker: written as ``SOURCE_FILE`` in the folder, with ``file_sizes`` of ``files``
            added (what a cheap "is it installed" check compares).
        show: a progress bar.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        members = _members(name, folder, zf, archive)
        names = {rel for _, rel in members}
        for path, _ in files:
            if path not in names:
                raise BadFile(f"{name}: {archive.name} holds no {folder}/{path}")
        need = sum(info.file_size for info, _ in members)
        free = shutil.disk_usage(dest.parent).free
        if free < need:
            raise UserError(f"{name}: {dest.parent} has {free:,} bytes free, the model folder "
                            f"needs {need:,}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            digests = _extract(zf, members, tmp, f"{name}: unpacking (MiB)", show)
            for path, want in files:
                if digests[path] != want:
                    raise BadFile(f"{name}: {path} has sha256 {digests[path][:16]}..., expected "
                                  f"{want[:16]}...")
            if max_seq_length is not None:
                _cap_length(tmp, max_seq_length)
            write_json(tmp / SOURCE_FILE, {
                **marker, "file_sizes": {p: (tmp / p).stat().st_size for p, _ in files}})
            for path in [tmp, *tmp.rglob("*")]:  # mkdtemp makes it private; plain data
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            replace_folder(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _extract(zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, str]], into: Path,
             label: str, show: bool) -> dict[str, str]:
    """Write each member under ``into``; returns the sha256 of each, by path."""
    digests = {}
    blocks = sum(-(-info.file_size // CHUNK) for info, _ in members)
    with progress_bar(label, total=blocks, enabled=show) as bar:
        for info, rel in members:
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with zf.open(info) as src, open(target, "wb") as out:
                while block := src.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.advance(1)
            digests[rel] = digest.hexdigest()
    return digests


def _cap_length(folder: Path, limit: int) -> None:
    """Lower ``sentence_bert_config.json``'s ``max_seq_length`` to ``limit`` (never raise it)."""
    path = folder / "sentence_bert_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    if int(config.get("max_seq_length") or limit + 1) > limit:
        config["max_seq_length"] = limit
        path.write_text(json.dumps(config, indent=2) + "\n")


def replace_folder(new: Path, dest: Path) -> None:
    """Put the finished folder ``new`` at ``dest``; a folder already there is moved aside
    first and removed only once ``new`` is in place."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)
