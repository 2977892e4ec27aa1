"""bench/embedders.py's command line (the estimate, one-line refusals, where its records go)
and its records: a cell whose trainings are all recorded runs no pipeline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import embedders  # noqa: E402
from _records import Records, record_key  # noqa: E402


def bench(*args):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "embedders.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_the_estimate_runs_and_trains_nothing(tmp_path):
    r = bench("--estimate", "--no-docs", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert re.search(r"3 embedders x 2 profile kinds x 2 methods x 3 seeds, 4 EmbeddingGemma "
                     r"prompt pairs; estimated [\d.]+ h", r.stdout)
    quick = bench("--estimate", "--quick", "--gemma-prompts", "none,none", "--out",
                  str(tmp_path / "out"))
    assert quick.returncode == 0 and "prompt pairs" not in quick.stdout, quick.stderr
    assert not (tmp_path / "out").exists()


def test_bad_flags_are_one_line_and_exit_2(tmp_path):
    for args, needle in ((["--profiles", "foo"], "--profiles: unknown kind 'foo'"),
                         (["--gemma-prompts", "a"], "--gemma-prompts takes two names"),
                         (["--seeds", "0"], "--seeds must be >= 1"),
                         (["--embedders", "minilm,minilm"], "--embedders lists a name twice"),
                         (["--embedders", "minilm", "--gemma-prompts", "none,none"],
                          "which --embedders does not list"),
                         (["--no-choose-prompts"], "--no-choose-prompts needs --gemma-prompts"),
                         (["--jobs", "0"], "--jobs must be >= 1")):
        r = bench("--estimate", "--no-docs", "--out", str(tmp_path / "out"), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert not (tmp_path / "out").exists()


def test_records_go_to_the_repository_unless_quick_or_smoke(tmp_path):
    out = str(tmp_path / "out")
    assert embedders.parse_args(["--out", out]).records == embedders.RECORDS
    assert embedders.RECORDS == ROOT / "bench" / "records" / "embedders.jsonl"
    for flags in (["--quick"], ["--max-users", "40"]):
        assert embedders.parse_args(["--out", out, *flags]).records == Path(out) / "records.jsonl"
    mine = str(tmp_path / "mine.jsonl")
    assert embedders.parse_args(["--out", out, "--quick", "--records", mine]).records == Path(mine)


def args_ctx(tmp_path) -> tuple[SimpleNamespace, dict]:
    args = SimpleNamespace(out=str(tmp_path / "out"), summarizer=embedders.SUMMARIZER)
    ctx = {"records": Records(tmp_path / "records.jsonl"), "base": {"train.epochs": 3},
           "verdicts": tmp_path / "verdicts.csv", "sha": "sha256:abc"}
    return args, ctx


def keys(ctx: dict, cell, method: str, seed: int) -> str:
    keyed = {**ctx["base"], **cell.settings(embedders.SUMMARIZER),
             "verdicts.source": embedders.VERDICTS_SOURCE, "verdicts.file": ctx["sha"]}
    return record_key(keyed, method, seed)


def result(seed: int, recall: float) -> dict:
    return {"seed": seed, "recall@20": recall, "val_recall@20": 0.3, "best_epoch": 5,
            "pseudo": {"n_pseudo": 50, "precision": 0.6}, "seconds": {"embed": 9.0,
                                                                        "profiles": 1.0},
            "per_user": (np.array([0, 1]), np.array([0.1, 0.2]))}


def test_a_cell_all_recorded_runs_no_pipeline(tmp_path, monkeypatch):
    args, ctx = args_ctx(tmp_path)
    cell = embedders.Cell("minilm", "llm")
    for m in embedders.METHODS:
        for s in range(2):
            ctx["records"].add(keys(ctx, cell, m, s), {}, result(s, 0.1 + s))

    def no_run(*a, **k):
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(embedders, "run_cell", no_run)
    got = embedders.trainings(args, ctx, cell, embedders.METHODS, range(2))
    assert [r["recall@20"] for r in got["llmhni-dns"]] == [0.1, 1.1]
    assert got["llmhni"][0]["pseudo"]["precision"] == 0.6
    assert got["llmhni"][0]["seconds"] == {"embed": 9.0, "profiles": 1.0}


def test_only_what_is_missing_runs_and_is_recorded_with_the_cells_figures(tmp_path,
                                                                            monkeypatch):
    args, ctx = args_ctx(tmp_path)
    cell = embedders.Cell(embedders.GEMMA, "template", ("query", "document"))
    ctx["records"].add(keys(ctx, cell, "llmhni", 0), {}, result(0, 0.5))  # the grid's training
    run_dir, calls = tmp_path / "cell", []
    for s in range(2):
        for m in embedders.METHODS:
            (run_dir / "train" / m / f"seed{s}").mkdir(parents=True)
            (run_dir / "train" / m / f"seed{s}" / "metrics.json").write_text(json.dumps(
                {"test": {"recall@20": 0.2 + s}, "val": {"recall@20": 0.25}, "best_epoch": 7}))

    def fake_run(a, settings, c, methods, seeds):
        calls.append((settings["verdicts.file"], list(methods), list(seeds)))
        return SimpleNamespace(dir=run_dir, record=lambda st: {"seconds": 2.0, "key": st})

    monkeypatch.setattr(embedders, "run_cell", fake_run)
    monkeypatch.setattr(embedders, "pseudo_precision", lambda run: {"precision": 0.7})
    monkeypatch.setattr(embedders, "per_user", lambda d: (np.array([0]), np.array([0.5])))
    got = embedders.trainings(args, ctx, cell, embedders.METHODS, range(2))
    assert calls == [(str(ctx["verdicts"]), ["llmhni", "llmhni-dns"], [0, 1])]
    assert [r["recall@20"] for r in got["llmhni"]] == [0.5, 1.2]  # seed 0 read, not retrained
    again = Records(ctx["records"].path)  # every new record holds the cell's figures
    dns = again.get(keys(ctx, cell, "llmhni-dns", 1))
    assert dns["recall@20"] == 1.2 and dns["val_recall@20"] == 0.25 and dns["best_epoch"] == 7
    assert dns["pseudo"] == {"precision": 0.7} and dns["seconds"] == {"embed": 2.0,
                                                                      "profiles": 2.0}
    assert len(ctx["records"].path.read_text().splitlines()) == 4  # 1 + the 3 missing
