"""bench/_records.py: finished trainings kept by key in a committed file, so a long bench
resumes on another machine; and bench/comparison.py's ``--weights``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _common import docs_command  # noqa: E402
from _records import Records, record_key  # noqa: E402

from llmhni_local.core.errors import UserError  # noqa: E402


def result(seed: int) -> dict:
    return {"seed": seed, "test": {"recall@20": 0.2}, "val": {"recall@20": 0.25},
            "epoch_seconds": 0.5, "epochs": 10, "best_epoch": 7,
            "per_user": (np.array([0, 3, 5]), np.array([0.1234567, 0.0, 1.0]))}


def test_where_and_how_fast_do_not_enter_the_key_what_is_computed_does():
    s = {"model.name": "lightgcn", "data.synthetic_noise": 0.0, "pipeline.out": "/a",
         "pipeline.jobs": 2, "pipeline.seeds": [0, 1]}
    same = {**s, "pipeline.out": "/b", "pipeline.jobs": 1, "pipeline.seeds": [0]}
    assert record_key(s, "bpr", 0) == record_key(same, "bpr", 0)
    assert record_key(s, "bpr", 0) != record_key(s, "bpr", 1)
    assert record_key(s, "bpr", 0) != record_key(s, "dns", 0)
    assert record_key(s, "bpr", 0) != record_key({**s, "data.synthetic_noise": 0.05}, "bpr", 0)


def test_a_record_reads_back_from_a_new_instance(tmp_path):
    path = tmp_path / "r" / "records.jsonl"
    recs = Records(path)
    assert recs.get("k") is None
    recs.add("k", {"method": "bpr", "seed": 0}, result(0))
    again = Records(path).get("k")
    assert again["test"] == {"recall@20": 0.2} and again["best_epoch"] == 7
    np.testing.assert_array_equal(again["per_user"][0], [0, 3, 5])
    np.testing.assert_allclose(again["per_user"][1], [0.123457, 0.0, 1.0])
    assert json.loads(path.read_text())["method"] == "bpr"


def test_a_broken_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    Records(path).add("k", {}, result(0))
    with path.open("a") as f:
        f.write('{"no key": 1}\n')
    with pytest.raises(UserError, match=r"records.jsonl: line 2 is not a record"):
        Records(path)


def test_weights_must_be_an_object_of_dotted_settings(tmp_path):
    for bad, needle in (('{"pool": 5}', "dotted settings"), ("[1", "not a JSON object")):
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "comparison.py"), "--estimate",
                            "--weights", bad, "--out", str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 2 and needle in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    ok = ROOT / "bench" / "records" / "comparison_weights.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "comparison.py"), "--estimate",
                        "--weights", str(ok)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_the_committed_weights_are_points_of_the_grids():
    from comparison import grids

    chosen = json.loads((ROOT / "bench" / "records" / "comparison_weights.json").read_text())
    grid = {k: v for g in grids().values() for k, v in g.items()}
    assert set(chosen) == set(grid)
    assert all(chosen[k] in grid[k] for k in chosen)


def test_auto_reader_precision_enters_the_key_as_what_it_resolves_to():
    from _records import pin_rater_dtype

    pinned = pin_rater_dtype({"rater.dtype": "auto"})
    assert pinned["rater.dtype"] in ("bfloat16", "float32")
    assert pin_rater_dtype({})["rater.dtype"] == pinned["rater.dtype"]
    assert pin_rater_dtype({"rater.dtype": "float32"}) == {"rater.dtype": "float32"}
    assert record_key({"rater.dtype": "bfloat16"}, "llmhni", 0) != record_key(
        {"rater.dtype": "float32"}, "llmhni", 0)


def test_a_record_names_the_machine_it_was_made_on(tmp_path):
    recs = Records(tmp_path / "r.jsonl")
    recs.add("k", {}, result(0))
    machine = json.loads((tmp_path / "r.jsonl").read_text())["machine"]
    assert set(machine) == {"cpu", "capability", "avx512_bf16", "cores"}


def test_provenance_counts_what_was_read_and_what_was_computed(tmp_path):
    path = tmp_path / "r.jsonl"
    Records(path).add("old", {}, result(0))
    recs = Records(path)
    assert recs.get("old") is not None and recs.get("absent") is None
    recs.add("new", {}, result(1))
    text = recs.provenance()
    assert text.startswith("2 trainings, 1 read from `r.jsonl` and 1 computed now")
    assert recs.machine["cpu"] in text


def test_a_docs_block_names_the_command_without_where_or_how_fast_it_ran():
    argv = ["--embedders", "minilm", "--out", "/home/me/runs/x", "--jobs=2", "--no-docs",
            "--records", "/tmp/r.jsonl", "--seeds", "3"]
    assert docs_command("embedders.py", argv) == (
        "python bench/embedders.py --embedders minilm --seeds 3")
    assert docs_command("comparison.py", ["--weights", "w.json"]) == (
        "python bench/comparison.py --weights w.json")
