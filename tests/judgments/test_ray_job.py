"""The rate stage as a Ray Data job (rate.engine = "ray") on a local cluster, tiny random Llama.

Every Ray run must end with exactly the rows of an uninterrupted in-process run: after a
clean job, after a worker lost mid-job, and after the driver was killed and the job run
again. The rater runs with ``rater.batch_size = 1`` (no padding), so a judgment does not
depend on the batch it was in and rows compare exactly, probabilities included.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from llmhni_local.core.errors import UserError  # noqa: E402
from llmhni_local.engine.api import Rater, unserved  # noqa: E402
from llmhni_local.engine.settings import RaterSettings  # noqa: E402
from llmhni_local.judgments.plan import RateSettings  # noqa: E402
from llmhni_local.judgments.run import checked_rater_id, rate_candidates  # noqa: E402
from llmhni_local.judgments.shards import SHARDS_DIR, pending_shards  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NETBLOCK = Path(__file__).resolve().parents[1] / "helpers" / "netblock"
_spec = importlib.util.spec_from_file_location("llmhni_test_rate_helpers",
                                               Path(__file__).parent / "test_run.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
make_run, rows = _helpers.make_run, _helpers.rows

# Worker-side helpers below are shipped to Ray workers by value (this file is not importable
# there under pytest's importlib mode); Ray serialises with its own copy of cloudpickle.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SETTINGS = dict(batch_size=6, max_failure_share=1.0)  # random weights: failures are fine


def rater(model: Path) -> RaterSettings:
    return RaterSettings(backend="transformers", model=str(model), dtype="float32",
                         max_tokens=2, batch_size=1)


def _backend(settings):
    from llmhni_local.backends import make_rating_backend

    return make_rating_backend(settings)


class _Wrapped(Rater):
    """The toolkit's backend with a fault: ``crash`` (lose the worker process on its n-th
    call, once: a marker file remembers it) or ``fail`` (raise on every call)."""

    loglikelihood = unserved("loglikelihood")

    def __init__(self, settings, marker: str | None = None, crash_on: int = 0,
                 fail: str = "") -> None:
        self.inner = _backend(settings)
        self.model_id, self.settings = self.inner.model_id, settings
        self.marker, self.crash_on, self.fail, self.calls = marker, crash_on, fail, 0

    @property
    def dtype_choice(self):
        return self.inner.dtype_choice

    def judge(self, requests):
        self.calls += 1
        if self.fail:
            raise RuntimeError(self.fail)
        if self.calls == self.crash_on and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-batch, as on a lost node
        return self.inner.judge(requests)

    def close(self) -> None:
        self.inner.close()


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    """A run folder without judgments, and its rows from an uninterrupted in-process run."""
    root = tmp_path_factory.mktemp("ray_runs")
    clean = make_run(root / "clean", n_users=5, k_neg=2, k_pos=1)
    ref = root / "reference"
    shutil.copytree(clean, ref)
    settings = rater(tiny_llama)
    mid, _ = checked_rater_id(settings)
    rep = rate_candidates(ref, functools.partial(_backend, settings), model_id=mid,
                          progress=False, settings=RateSettings(**SETTINGS))
    assert rep.rated == 2 * 5 * 3
    return {"clean": clean, "reference": rows(ref), "model_id": mid, "rater": settings}


@pytest.fixture(scope="module")
def cluster():
    from llmhni_local.backends.ray_cluster import connect

    assert connect(num_cpus=2)  # a local cluster, started as the toolkit starts it
    yield
    ray.shutdown()


def fresh(runs, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(runs["clean"], run)
    return run


def ray_rate(run, runs, factory, **extra):
    return rate_candidates(run, factory, model_id=runs["model_id"], progress=False,
                           settings=RateSettings(**SETTINGS, engine="ray", **extra))


def same_rows(run, runs) -> None:
    pd.testing.assert_frame_equal(rows(run), runs["reference"], check_exact=True)
    assert pending_shards(run) == []
    assert not any((run / SHARDS_DIR).glob("*/")), "a job folder was left behind"


# ---------------------------------------------------------------------------- bad input
def test_unreachable_address_is_named_before_anything_starts(runs, tmp_path):
    run = fresh(runs, tmp_path)
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def never():
        raise AssertionError("no backend may be built")

    t = time.monotonic()
    with pytest.raises(UserError, match=rf"rate.ray_address '127.0.0.1:{port}': no Ray "
                                        "cluster answers"):
        ray_rate(run, runs, never, ray_address=f"127.0.0.1:{port}")
    assert time.monotonic() - t < 30
    with pytest.raises(UserError, match="expected host:port"):
        ray_rate(run, runs, never, ray_address="no-port-here")
    assert rows(run).empty


def test_worker_without_the_model_or_dtype_is_one_line_naming_it(runs, tmp_path, cluster):
    run = fresh(runs, tmp_path)
    gone = dict(vars(runs["rater"]), model=str(tmp_path / "not-on-this-worker"))
    with pytest.raises(UserError) as err:  # the driver has the model, the workers do not
        ray_rate(run, runs, functools.partial(_backend, RaterSettings(**gone)))
    msg = str(err.value)
    assert msg.startswith("ray worker ") and "not-on-this-worker" in msg and "\n" not in msg
    broken = functools.partial(_Wrapped, runs["rater"], fail="bf16 matmul is not supported")
    with pytest.raises(UserError, match=r"^ray worker .*warm-up.*rater.dtype = 'float32'.*"
                                        r"bf16 matmul is not supported"):
        ray_rate(run, runs, broken)
    assert rows(run).empty and pending_shards(run) == []  # nothing rated, nothing merged


# ---------------------------------------------------------------------------- same rows
def test_ray_job_gives_the_rows_of_an_in_process_run(runs, tmp_path, cluster):
    run = fresh(runs, tmp_path)
    rep = ray_rate(run, runs, functools.partial(_backend, runs["rater"]))
    assert rep.rated == 30 and rep.skipped == 0 and rep.engine_started and rep.batches >= 5
    same_rows(run, runs)
    manifest = json.loads((run / "rating.json").read_text())
    assert manifest["status"] == "done" and manifest["settings"]["engine"] == "ray"

    def never():
        raise AssertionError("nothing is missing: no worker may start")

    again = ray_rate(run, runs, never)
    assert again.rated == 0 and again.skipped == 30 and not again.engine_started


@pytest.mark.slow
def test_a_lost_worker_is_replaced_and_rows_are_exact(runs, tmp_path, cluster):
    run = fresh(runs, tmp_path)
    marker = tmp_path / "crashed"
    # call 1 is the warm-up; the worker dies in its 3rd call (its 2nd batch), after one
    # batch is already merged, and its batch is rated again by the restarted worker
    factory = functools.partial(_Wrapped, runs["rater"], marker=str(marker), crash_on=3)
    rep = ray_rate(run, runs, factory)
    assert marker.exists(), "the worker was never lost: the test tested nothing"
    assert rep.rated == 30
    same_rows(run, runs)


@pytest.mark.slow
def test_killed_driver_then_rerun_ends_with_exact_rows_and_no_outside_contact(runs, tmp_path):
    """The driver (with its local cluster) runs in a subprocess under the network block;
    it is killed once a shard exists, then the job runs again, also blocked."""
    run = fresh(runs, tmp_path)
    log = tmp_path / "netblock.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=f"{NETBLOCK}{os.pathsep}{REPO}", NETBLOCK_LOG=str(log))
    cmd = [sys.executable, str(NETBLOCK / "ray_offline.py"), str(run), runs["rater"].model]
    proc = subprocess.Popen(cmd + ["1.0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not (pending_shards(run) or _stored(run)):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no shard written in 240 s"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait(timeout=60)
    assert _stored(run) < 30, "the job ended before it was killed: the test tested nothing"
    out = subprocess.run(cmd + ["0"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(next(ln for ln in out.stdout.splitlines()
                             if ln.startswith("RESULT "))[len("RESULT "):])
    assert result["rated"] + result["skipped"] == 30
    same_rows(run, runs)
    assert not log.exists() or log.read_text() == "", log.read_text()[:2000]


def _stored(run: Path) -> int:
    import sqlite3

    db = run / "judgments.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0
