"""Small file helpers: atomic writes, content hashes, and what a full disk looks like.

Every output is written to a temporary file beside its target and renamed into place, so a
killed or failed command never leaves a half-written file behind. A write that fails for want
of room (full disk, quota, file-size limit) is one line naming the file (:func:`disk_full_reason`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from llmhni_local.core.errors import UserError

# errnos of a write that found no room: full filesystem, quota, file-size limit (ulimit -f)
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
LOW_SPACE = 1 << 20  # bytes free below which a write error without errno is blamed on the disk


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``path``, on failure remove it.

    A failure for want of room becomes a :class:`~llmhni_local.core.errors.UserError` naming
    ``path``; whatever was at ``path`` before is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        why = None if isinstance(exc, UserError) else disk_full_reason(path, exc, written=[tmp_path])
        if why is None:
            raise
        raise UserError(f"{path}: not written, {why}; anything there before is unchanged; "
                        "make room and run the command again") from exc
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def disk_full_reason(path: str | os.PathLike, exc: BaseException,
            written: Iterable[str | os.PathLike | None] = ()) -> str | None:
    """Why a write into ``path`` failed if it was for want of room ("disk full (...)", "file
    too large (...)"), else None.

    An :class:`OSError` says so by its errno. Libraries that wrap it lose the errno (torch's
    zip writer raises ``RuntimeError``, SQLite says "disk I/O error"), so for any other
    exception the file-size limit is compared with the sizes of the files being ``written``,
    and the free space of ``path``'s filesystem with :data:`LOW_SPACE`.
    """
    if isinstance(exc, OSError):
        if exc.errno == errno.EFBIG:
            return _file_size_limit() or "file too large"
        if exc.errno == errno.ENOSPC:
            return f"disk full ({_free_text(path)})"
        if exc.errno == errno.EDQUOT:
            return f"disk quota exceeded ({_free_text(path)})"
        return None  # another OS error says what it is
    limit = _fsize_limit()
    if limit is not None:
        for f in written:
            with contextlib.suppress(OSError, TypeError):
                if f is not None and os.path.getsize(f) >= limit:
                    return _file_size_limit()
    free = _free_bytes(path)
    if free is not None and free < LOW_SPACE:
        return f"disk full ({_free_text(path)})"
    return None


def _fsize_limit() -> int | None:
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _file_size_limit() -> str | None:
    limit = _fsize_limit()
    if limit is None:
        return None
    return f"file too large (this process may write files of at most {limit} bytes: ulimit -f)"


def _free_bytes(path: str | os.PathLike) -> int | None:
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _free_text(path: str | os.PathLike) -> str:
    free = _free_bytes(path)
    where = Path(path).parent
    return f"{free / 1e6:.1f} MB free in {where}" if free is not None else f"on {where}"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def jsonable(x: Any) -> Any:
    """``x`` with floats JSON can hold: NaN and infinities become None, numpy scalars plain
    numbers (dicts, lists and tuples are walked).

    >>> jsonable({"a": float("nan"), "b": [np.float32(0.5), np.int64(2)]})
    {'a': None, 'b': [0.5, 2]}
    """
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _jsonable(obj: Any) -> Any:
    """``json.dumps``'s fallback for what it cannot write itself (numpy, paths)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_dir(path: str | os.PathLike) -> str:
    """Hash of a folder: relative names and contents of every file, in sorted order."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def publish_folder(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move a finished folder built at ``tmp`` onto ``out``, replacing what was there.

    ``tmp`` is made readable (``mkdtemp`` makes it private; what we publish is plain data); the
    final step is one rename, so a reader sees the old folder or the new one, never a mix.
    """
    os.chmod(tmp, 0o755)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
