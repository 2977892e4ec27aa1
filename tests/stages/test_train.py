"""The ``train`` stage: (method, seed) trainings in parallel worker processes
(``pipeline.jobs``) give what one after another gives, and a failing one is reported."""

import json

import pytest

from llmhni_local.stages.context import Run
from llmhni_local.stages.settings import load_run_config
from llmhni_local.stages.train import run_stage, worker_threads
from llmhni_local.stages.train_store import METHOD_KEY_FILE, TRAIN_STORE

SMALL = {"data.max_users": 40, "model.dim": 8, "train.epochs": 2, "train.eval_every": 1,
         "train.min_epochs": 1, "train.patience": 1, "train.threads": 1,
         "pipeline.seeds": [0, 1]}


@pytest.fixture(scope="module", autouse=True)
def movielens():
    try:
        from llmhni_local.data.movielens import ml100k_dir

        ml100k_dir()
    except Exception as exc:  # noqa: BLE001 - any reason the data cannot be had
        pytest.skip(f"MovieLens-100K unavailable: {exc}")


def stage(folder, methods, jobs, logs):
    cfg = load_run_config("configs/ml100k.toml", {**SMALL, "pipeline.out": str(folder),
                                                   "pipeline.methods": methods,
                                                   "pipeline.jobs": jobs})
    run = Run(cfg, progress=False, log=logs.append)
    # the method keys read the upstream stages' keys; the methods here read no stage's files
    run.keys = {"data": "data-key", "rec_pre": "rec-pre-key", "align": "align-key"}
    return run, run_stage(run)


def test_parallel_trainings_give_what_sequential_ones_give(tmp_path):
    methods = ["dns", "wbpr"]
    seq_logs, par_logs = [], []
    _, seq = stage(tmp_path / "seq", methods, 1, seq_logs)
    run, par = stage(tmp_path / "par", methods, 2, par_logs)
    assert "[train] 4 trainings, 2 at a time, 1 thread(s) each" in par_logs
    assert seq == par  # same seeds, one thread each: the same figures to the last bit
    for m in methods:
        for s in (0, 1):
            out = run.dir / "train" / m / f"seed{s}"
            assert (out / METHOD_KEY_FILE).is_file()
            assert json.loads((out / "manifest.json").read_text())["method"] == m
    assert len(list((run.dir / TRAIN_STORE).iterdir())) == 4
    # finished runs are reused by key, with or without workers
    again = []
    stage(tmp_path / "par", methods, 2, again)
    assert sum("unchanged, reused" in line for line in again) == 4


def test_a_failing_training_stops_the_stage_and_keeps_the_others(tmp_path):
    # RLMRec-Con reads align/raw.npz, which this folder lacks: its worker fails
    logs = []
    with pytest.raises(FileNotFoundError, match="raw.npz"):
        stage(tmp_path / "run", ["rlmrec-con", "dns"], 2, logs)
    for s in (0, 1):
        assert not (tmp_path / "run" / "train" / "rlmrec-con" / f"seed{s}" / METHOD_KEY_FILE).exists()
    kept = [line for line in logs if line.startswith("[train] dns seed")]
    for line in kept:  # what finished before the stop is kept (cancelled ones never started)
        seed = line.split()[3].rstrip(":")
        assert (tmp_path / "run" / "train" / "dns" / f"seed{seed}" / METHOD_KEY_FILE).is_file()


def test_worker_threads_share_the_cores():
    assert worker_threads(0, 2, cores=2) == 1
    assert worker_threads(0, 3, cores=16) == 5
    assert worker_threads(0, 4, cores=2) == 1
    assert worker_threads(3, 2, cores=2) == 3  # an explicit train.threads holds


def test_jobs_must_be_positive():
    from llmhni_local.core.errors import ConfigError

    with pytest.raises(ConfigError, match="pipeline.jobs must be >= 1"):
        load_run_config(None, {"pipeline.jobs": 0})


def test_workers_end_when_the_stage_is_killed(tmp_path):
    """A bench killed mid-stage leaves no trainings running that no one would keep."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "stage.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from llmhni_local.stages.context import Run
from llmhni_local.stages.settings import load_run_config
from llmhni_local.stages.train import run_stage
cfg = load_run_config("configs/ml100k.toml", {{"data.max_users": 0, "train.epochs": 500,
      "train.patience": 500, "train.eval_every": 50, "train.threads": 1,
      "pipeline.methods": ["dns"], "pipeline.seeds": [0, 1], "pipeline.jobs": 2,
      "pipeline.out": {str(tmp_path / "run")!r}}})
if __name__ == "__main__":  # spawned workers import this file again
    run = Run(cfg, progress=False, log=print)
    run.keys = {{"data": "d", "rec_pre": "r"}}
    run_stage(run)
""")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, str(script)], cwd=root)

    def workers():
        out = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "multiprocessing.spawn"],
                             capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    try:
        deadline = time.time() + 120
        while len(workers()) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        pids = workers()
        assert len(pids) == 2, "the stage did not start two workers"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10  # a training of every user takes minutes
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")
             and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]
    assert not alive
