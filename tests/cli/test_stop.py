"""A stopped command leaves no engine behind: ``python cli.py rate`` with vLLM on the tiny Llama,
sent SIGTERM once its EngineCore process is up, ends with every process it started.

Before the CLI closed its backends on a stop signal (``core/closing.py``), Python's default
SIGTERM ended the main process alone and vLLM's ``EngineCore`` (which only notes a SIGTERM
while it loads a model) went on running, minutes later.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("vllm")

ROOT = Path(__file__).resolve().parents[2]


def _fixture():
    spec = importlib.util.spec_from_file_location(
        "rating_fixture_stop", ROOT / "tests" / "helpers" / "rating_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _session(sid: int) -> list[str]:
    """``pid name`` of every live process of session ``sid`` (the command's own session:
    its descendants, and those re-parented when their parent died)."""
    out = []
    for p in psutil.process_iter(["pid", "name", "status"]):
        try:
            if os.getsid(p.info["pid"]) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(f"{p.info['pid']} {p.info['name']}")
        except (OSError, psutil.Error):
            continue
    return out


@pytest.mark.slow
def test_sigterm_mid_rate_leaves_no_engine_process(tmp_path, tiny_llama):
    run = _fixture().make_run(tmp_path / "run", n_users=6, n_items=12, per_user=4, k_neg=2,
                              k_pos=2)
    env = dict(os.environ, PYTHONPATH=str(ROOT), LLMHNI_CACHE=str(tmp_path / "cache"),
               VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_NUM_OF_RESERVED_CPU="0")
    log = tmp_path / "rate.log"
    with log.open("wb") as out:
        # its own session: every process it starts is found (and cleaned up) by session id
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "rate", str(run), "--backend", "vllm",
             "--model", str(tiny_llama), "--set", "rater.dtype=float32", "--set",
             "rater.max_model_len=512", "--set", "rate.batch_size=2", "--set",
             "rate.max_failure_share=1.0", "--quiet"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    main = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 420
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no EngineCore process in time"
            try:
                names = [p.name() for p in main.children(recursive=True)]
            except psutil.Error:
                names = []
            if any("EngineCore" in n for n in names):
                break
            time.sleep(0.2)
        assert _session(proc.pid), "the command runs in its own session"
        proc.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` does
        deadline = time.monotonic() + 30
        while (proc.poll() is None or _session(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.25)
        left = _session(proc.pid)
        assert proc.poll() is not None and left == [], (
            f"30 s after SIGTERM: main exit {proc.returncode}, still running: {left}\n"
            + log.read_text()[-3000:])
        assert proc.returncode == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        for p in _session(proc.pid):
            try:
                os.kill(int(p.split()[0]), signal.SIGKILL)
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
