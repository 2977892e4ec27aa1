"""bench/baseline_parity.py keeps every finished (method, seed) training in a records file: a
recorded training runs nothing, and a --quick run never writes the repository's file."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from llmhni_local.train.run import PER_USER_FILE

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import baseline_parity as bp  # noqa: E402
from _records import Records, record_key  # noqa: E402


def write_split(folder: Path, n_users: int = 24, n_items: int = 30, seed: int = 0) -> Path:
    """A tiny RLMRec-format folder: every user has training, validation and test items."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pairs: dict[str, list] = {"trn_mat.pkl": [], "val_mat.pkl": [], "tst_mat.pkl": []}
    for u in range(n_users):
        items = rng.choice(n_items, size=8, replace=False)
        pairs["trn_mat.pkl"] += [(u, i) for i in items[:5]]
        pairs["val_mat.pkl"].append((u, items[5]))
        pairs["tst_mat.pkl"] += [(u, i) for i in items[6:]]
    for name, p in pairs.items():
        p = np.asarray(p)
        m = sp.coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n_users, n_items))
        (folder / name).write_bytes(pickle.dumps(m))
    return folder


def fake_run(out: Path) -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(pipeline=SimpleNamespace(out=str(out)),
                                               eval=SimpleNamespace(ks=[10, 20])), data=None)


def result() -> dict:
    return {"test": {"recall@20": 0.15, "ndcg@20": 0.09}, "val": {"recall@20": 0.16},
            "test_train_mask_only": {"recall@20": 0.17}, "best_epoch": 120, "epochs_run": 170,
            "epoch_seconds": 12.0, "device": "cpu", "wall_seconds": 2040.0,
            "per_user": (np.array([0, 1, 2]), np.array([0.1, 0.2, 0.15]))}


def settings(tmp_path: Path, *extra: str) -> dict:
    args = bp.parse_args(["--out", str(tmp_path / "out"), "--data", str(tmp_path / "d"), *extra])
    return bp.keyed_settings(args, "d" * 64)


def test_records_default_to_the_repository_and_to_out_for_quick(tmp_path):
    assert bp.parse_args([]).records == ROOT / "bench" / "records" / "baseline_parity.jsonl"
    quick = bp.parse_args(["--quick", "--out", str(tmp_path / "o")])
    assert quick.records == tmp_path / "o" / "records.jsonl"
    mine = bp.parse_args(["--quick", "--records", str(tmp_path / "r.jsonl")])
    assert mine.records == tmp_path / "r.jsonl"


def test_the_key_reads_the_split_not_its_path_nor_where_or_how_fast(tmp_path):
    a, b = write_split(tmp_path / "a"), write_split(tmp_path / "b")
    assert bp.data_identity(a) == bp.data_identity(b)
    write_split(tmp_path / "c", seed=1)
    assert bp.data_identity(a) != bp.data_identity(tmp_path / "c")

    def key(*flags, data=a):
        args = bp.parse_args(["--data", str(data), *flags])
        return record_key(bp.keyed_settings(args, bp.data_identity(data)), "sgl", 0)

    assert key() == key(data=b) == key("--threads", "2", "--out", str(tmp_path / "elsewhere"))
    assert key() != key(data=tmp_path / "c")
    assert key() != key("--epochs", "300") != key("--init", "xavier")
    assert key() != key("--lr", "2e-3")


def test_a_recorded_training_is_not_trained_again(tmp_path, monkeypatch):
    import llmhni_local.stages.methods as methods

    def refuse(*a, **k):
        raise AssertionError("a recorded training was trained again")

    monkeypatch.setattr(methods, "train_method", refuse)
    monkeypatch.setattr(bp, "train_mask_only", refuse)
    s = settings(tmp_path)
    records = Records(tmp_path / "records.jsonl")
    records.add(record_key(s, "sgl", 0), {"method": "sgl", "seed": 0}, result())
    row = bp.run_one(fake_run(tmp_path / "out"), "sgl", 0, Records(records.path), s)
    assert row["recorded"] and row["reused"] and row["folder"] is None
    assert row["test"]["recall@20"] == 0.15 and row["best_epoch"] == 120
    assert row["test_train_mask_only"]["recall@20"] == 0.17 and "per_user" not in row
    assert not (tmp_path / "out").exists()
    summary = bp.summarise("sgl", [row])  # the table's figures come from the record alone
    assert summary["recall@20_mean"] == 0.15 and summary["epoch_seconds"] == 12.0


def test_a_finished_training_is_recorded_at_once_and_then_read(tmp_path, monkeypatch):
    import llmhni_local.stages.methods as methods

    calls = []

    def train(run, method, seed, folder):
        calls.append((method, seed))
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(
            {"test": {"recall@20": 0.2, "ndcg@20": 0.1}, "val": {"recall@20": 0.21},
             "best_epoch": 60, "epochs_run": 110, "epoch_seconds": 3.5, "device": "cpu"}))
        np.savez(folder / PER_USER_FILE, users=np.array([4, 7]), **{"recall@20": [0.5, 0.0]})

    monkeypatch.setattr(methods, "train_method", train)
    monkeypatch.setattr(bp, "train_mask_only", lambda folder, data, ks: {"recall@20": 0.22})
    s, path = settings(tmp_path), tmp_path / "records.jsonl"
    row = bp.run_one(fake_run(tmp_path / "out"), "simgcl", 1, Records(path), s)
    assert calls == [("simgcl", 1)] and not row["recorded"] and not row["reused"]
    line = json.loads(path.read_text())
    assert line["key"] == record_key(s, "simgcl", 1)
    assert (line["method"], line["seed"]) == ("simgcl", 1)
    assert line["users"] == [4, 7] and line["recall@20"] == [0.5, 0.0]
    assert line["result"]["test_train_mask_only"] == {"recall@20": 0.22}

    shutil.rmtree(tmp_path / "out")  # another machine: the folder is gone, the records are not
    again = bp.run_one(fake_run(tmp_path / "out"), "simgcl", 1, Records(path), s)
    assert calls == [("simgcl", 1)] and again["recorded"]
    assert {k: again[k] for k in ("test", "val", "best_epoch", "epochs_run", "epoch_seconds",
                                  "test_train_mask_only")} == \
        {k: row[k] for k in ("test", "val", "best_epoch", "epochs_run", "epoch_seconds",
                             "test_train_mask_only")}
    other = settings(tmp_path, "--epochs", "300")  # another setting: trained again
    bp.run_one(fake_run(tmp_path / "out"), "simgcl", 1, Records(path), other)
    assert calls == [("simgcl", 1)] * 2 and len(path.read_text().splitlines()) == 2


def bench(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "baseline_parity.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_quick_runs_record_in_out_and_a_second_machine_reads_them(tmp_path):
    """The CLI on a tiny split: 2 epochs of SGL; the repository's records file is not written;
    with the run folder gone, the table comes back from OUT/records.jsonl and nothing trains."""
    repo_file = ROOT / "bench" / "records" / "baseline_parity.jsonl"
    before = repo_file.read_bytes() if repo_file.is_file() else None
    data, out = write_split(tmp_path / "data"), tmp_path / "out"
    flags = ("--quick", "--quiet", "--methods", "sgl", "--data", str(data), "--out", str(out))
    first = bench(*flags, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "sgl seed 0: training into" in first.stdout
    assert len((out / "records.jsonl").read_text().splitlines()) == 1
    assert (repo_file.read_bytes() if repo_file.is_file() else None) == before

    shutil.rmtree(out / "sgl-seed0")
    second = bench(*flags, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "sgl seed 0: read from" in second.stdout and "training into" not in second.stdout
    assert not (out / "sgl-seed0").exists()
    a, b = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (first, second))
    assert a["sgl/recall@20_mean"] == pytest.approx(b["sgl/recall@20_mean"])
    assert a["sgl/ndcg@20_mean"] == pytest.approx(b["sgl/ndcg@20_mean"])
    assert (a["recorded_before"], b["recorded_before"]) == (0, 1)
    assert len((out / "records.jsonl").read_text().splitlines()) == 1


def test_a_broken_records_file_is_one_line_and_exit_2(tmp_path):
    data, bad = write_split(tmp_path / "data"), tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = bench("--quick", "--data", str(data), "--out", str(tmp_path / "out"),
              "--records", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "bad.jsonl: line 1 is not a record" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
