"""A stopped process closes its backends and ends the processes under it (``core/closing.py``),
without an engine: a fake backend and a child that ignores SIGTERM, as vLLM's EngineCore does
while it loads a model. The real thing (the CLI rating with vLLM) is tests/cli/test_stop.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmhni_local.core import closing

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc (Linux)")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import os, subprocess, sys, time
from pathlib import Path

from llmhni_local.core.closing import install_stop_handlers
from llmhni_local.engine.api import Rater, unserved

out = Path(sys.argv[1])


class Engine(Rater):
    """A backend whose engine is a child process that ignores SIGTERM."""

    loglikelihood = unserved("loglikelihood")

    def __init__(self):
        super().__init__()
        self.proc = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 300 & wait; sleep 300"])
        (out / "engine.pid").write_text(str(self.proc.pid))

    def judge(self, requests):
        return []

    def close(self):
        (out / "closed").write_text("yes")
        super().close()


install_stop_handlers(grace_s=1.0)
engine = Engine()
try:
    (out / "ready").write_text("yes")
    time.sleep(300)
finally:
    (out / "finally").write_text("yes")
'''


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _session(sid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getsid(int(name)) == sid and _alive(int(name)):
                    out.append(int(name))
            except OSError:
                continue
    return out


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT)])
def test_a_stop_signal_closes_backends_and_ends_the_process_tree(tmp_path, sig, code):
    script = tmp_path / "stoppable.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        engine = int((tmp_path / "engine.pid").read_text())
        time.sleep(0.3)  # bash has set its trap and started its own child
        under = closing.descendants(proc.pid)
        assert engine in under and len(under) >= 2  # bash and the sleep under it
        proc.send_signal(sig)
        proc.wait(timeout=30)
        out = proc.stdout.read().decode()
        # SIGINT ends as an uncaught KeyboardInterrupt does outside the CLI (killed by SIGINT)
        assert proc.returncode == code, out
        assert (tmp_path / "closed").exists() and (tmp_path / "finally").exists()
        deadline = time.monotonic() + 10
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _session(proc.pid) == [], "processes left behind"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_end_processes_terminates_then_kills():
    polite = subprocess.Popen(["sleep", "300"])
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    time.sleep(0.3)
    try:
        assert {polite.pid, stubborn.pid} <= set(closing.descendants())
        t0 = time.monotonic()
        killed = closing.end_processes([polite.pid, stubborn.pid], grace_s=1.0)
        assert killed == [stubborn.pid] and time.monotonic() - t0 < 5
        assert polite.wait(5) == -signal.SIGTERM and stubborn.wait(5) == -signal.SIGKILL
    finally:
        for p in (polite, stubborn):
            p.kill()
            p.wait()
