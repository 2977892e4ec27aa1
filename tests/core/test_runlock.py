"""One process per run folder (``llmhni_local/core/runlock.py``), with real second processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.core.runlock import LOCK_NAME, lock_holder, run_lock

ROOT = Path(__file__).resolve().parents[2]
# Holds the lock on argv[1] until its stdin is closed.
HOLDER = """
import sys
from llmhni_local.core.runlock import run_lock
with run_lock(sys.argv[1], "holder"):
    print("locked", flush=True)
    sys.stdin.read()
"""
TRY = """
import sys
from llmhni_local.core.errors import UserError
from llmhni_local.core.runlock import run_lock
try:
    with run_lock(sys.argv[1], "second"):
        print("got it")
except UserError as exc:
    print(exc)
    sys.exit(2)
"""


def python(code: str, *args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock on ``tmp_path / 'run'``."""
    run = tmp_path / "run"
    proc = python(HOLDER, run)
    try:
        assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
        yield run, proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)


def test_a_second_process_is_refused_naming_the_holder(holder):
    run, proc = holder
    second = python(TRY, run)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 2, err
    line = out.strip()
    assert "\n" not in line and f"pid {proc.pid} (holder: " in line and str(run) in line
    info = lock_holder(run)
    assert info["pid"] == proc.pid and info["command"] == "holder" and info["host"]
    assert info["started"].endswith("Z")


def test_the_lock_is_free_once_its_holder_ends(holder):
    run, proc = holder
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert not (run / LOCK_NAME).exists()
    second = python(TRY, run)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0 and out.strip() == "got it" and "taking over" not in err


def test_a_killed_holder_leaves_a_lock_that_is_taken_over(holder, capsys):
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run / LOCK_NAME).is_file()  # no chance to clean up
    with run_lock(run, "after"):
        assert lock_holder(run)["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"taking over the lock of pid {proc.pid} (holder," in err and len(err.splitlines()) == 1
    assert not (run / LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": pid, "command": "rate", "argv": "x",
                                             "host": "h", "started": "then"}))
    with run_lock(run, "rate"):
        pass
    assert f"taking over the lock of pid {pid} (rate, started then)" in capsys.readouterr().err
    assert not (run / LOCK_NAME).exists()


def test_released_after_an_exception_and_after_ctrl_c(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with run_lock(run, "x"):
                assert (run / LOCK_NAME).is_file()
                raise exc
        assert not (run / LOCK_NAME).exists()
        with run_lock(run, "again"):  # and can be taken again at once
            pass


def test_reentrant_in_one_process(tmp_path):
    run = tmp_path / "run"
    with run_lock(run, "outer"):
        with run_lock(tmp_path / "." / "run", "inner"):  # another spelling, same folder
            assert lock_holder(run)["command"] == "outer"
        assert (run / LOCK_NAME).is_file()  # the outer block still holds it
        second = python(TRY, run)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 2 and f"pid {os.getpid()}" in out
    assert not (run / LOCK_NAME).exists()


def test_a_folder_made_only_for_the_lock_is_removed_again(tmp_path):
    run = tmp_path / "new"
    with pytest.raises(UserError):
        with run_lock(run, "x"):
            raise UserError("bad data")
    assert not run.exists()


@pytest.mark.parametrize("args", [
    ("rate", "{run}"),
    ("verdicts", "decide", "{run}"),
    ("verdicts", "import", "{run}", "{run}/v.csv", "--source", "x"),
    ("run", "--out", "{run}"),
    ("train", "--out", "{run}"),
    ("audit", "import", "{run}", "{run}/labels.csv"),
    ("judgments", "repair", "{run}"),
], ids=lambda a: " ".join(a[:2]))
def test_cli_commands_on_a_locked_folder_exit_2_with_one_line(holder, args):
    run, proc = holder
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"),
                        *(a.format(run=run) for a in args)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {run}: in use by pid {proc.pid} (holder: ")
    assert proc.poll() is None and (run / LOCK_NAME).is_file()  # the holder is untouched
