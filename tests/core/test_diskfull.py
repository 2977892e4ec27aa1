"""A full disk while rating or training: one line naming the file, nothing half-written, and a
rerun with room resumes.

The disk is "filled" with the file-size limit (``RLIMIT_FSIZE``, ``ulimit -f``) of a
subprocess that ignores SIGXFSZ, so a write past the limit fails with EFBIG as a write to a
full disk fails with ENOSPC; no root, no special filesystem. ENOSPC itself is simulated in
process.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from llmhni_local.core import io
from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "helpers" / "rating_fixture.py"
_spec = importlib.util.spec_from_file_location("rating_fixture", FIXTURE)
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)


def limited(args, limit: int, **kw):
    """Run ``args`` with files limited to ``limit`` bytes (a write past it fails: EFBIG)."""
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # stays ignored across exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
                          preexec_fn=preexec, **kw)


def one_error_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def count_rows(db: Path) -> int:
    with closing(sqlite3.connect(db)) as c:
        assert c.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        return c.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]


def test_rating_into_a_full_disk_stops_cleanly_and_resumes(tmp_path):
    run = rf.make_run(tmp_path / "run")
    clean = rf.make_run(tmp_path / "clean")
    batch = 64
    r = limited([sys.executable, str(FIXTURE), str(run), str(batch)], limit=300_000)
    line = one_error_line(r)
    db = run / "judgments.sqlite"
    assert line.startswith(f"error: {db}: file too large (")
    assert "the batch in flight was rolled back" in line and "rate again" in line
    stored = count_rows(db)  # the store is whole: quick_check ok
    assert 0 < stored < 6000 and stored % batch == 0  # whole batches only
    rep = rf.rate(run, batch)  # room again
    assert rep.skipped == stored and rep.rated == 6000 - stored
    rf.rate(clean, batch)

    def rows(folder):
        with closing(sqlite3.connect(folder / "judgments.sqlite")) as c:
            return c.execute("SELECT user, item, view, model_id, adapter, prompt_hash, text, "
                             "label, p_high FROM judgments ORDER BY 1, 2, 3, 4, 5, 6").fetchall()

    assert rows(run) == rows(clean)


def test_training_into_a_full_disk_leaves_no_half_written_output(tmp_path):
    out = tmp_path / "train"
    args = [sys.executable, str(ROOT / "cli.py"), "train", "--out", str(out), "--max-users",
            "100", "--epochs", "1", "--eval-every", "1", "--dim", "8", "--quiet"]
    r = limited(args, limit=20_000)  # the checkpoint is bigger than that
    line = one_error_line(r)
    assert line.startswith(f"error: {out / 'model.pt'}: not written, file too large (")
    assert "make room and run the command again" in line
    assert not (out / "model.pt").exists() and not list(out.glob(".*"))  # no temp files
    assert not (out / "metrics.json").exists()  # not a finished run
    r = limited(args, limit=resource.RLIM_INFINITY)
    assert r.returncode == 0, r.stderr
    assert (out / "model.pt").is_file() and (out / "metrics.json").is_file()


def test_disk_full_in_a_write_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"old": True})
    with pytest.raises(UserError) as err:
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(err.value).startswith(f"{path}: not written, disk full (")
    assert " MB free in " in str(err.value)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_wrapped_write_error_on_a_full_disk_is_named_too(tmp_path, monkeypatch):
    # torch's zip writer raises RuntimeError, losing the errno: the free space tells
    monkeypatch.setattr(io, "_free_bytes", lambda path: 0)
    with pytest.raises(UserError, match="not written, disk full"):
        with atomic_path(tmp_path / "model.pt"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0")
    monkeypatch.setattr(io, "_free_bytes", lambda path: 10 << 30)
    with pytest.raises(RuntimeError):  # with room to spare it is not the disk: as it was
        with atomic_path(tmp_path / "model.pt"):
            raise RuntimeError("something else")
    with pytest.raises(OSError):  # another OS error says what it is
        with atomic_path(tmp_path / "model.pt"):
            raise PermissionError(errno.EACCES, "denied")


def test_a_full_disk_under_sqlite_is_named(tmp_path):
    from llmhni_local.judgments.store import room_problem

    db = tmp_path / "judgments.sqlite"
    full = sqlite3.OperationalError("database or disk is full")
    assert room_problem(db, full).startswith("disk full")
    assert room_problem(db, sqlite3.OperationalError("database is locked")) is None
