"""``llmhni rater assess`` from the command line: a small MovieLens run rated by the tiny
random Llama (transformers), assessed twice (the second rates nothing), and its one-line
errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def one_line_error(r, needle: str) -> None:
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr


def test_assess_a_run_then_again_rates_nothing(tmp_path, tiny_llama, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from llmhni_local.cli import llm, rater

    try:
        from llmhni_local.data.movielens import ml100k_dir

        ml100k_dir()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"MovieLens-100K unavailable: {exc}")
    app = typer.Typer()
    llm.mount(app)
    app.add_typer(rater.app, name="rater")
    runner = CliRunner()
    run, cfg = tmp_path / "run", tmp_path / "c.toml"
    cfg.write_text(f'[data]\nsource = "ml100k"\nmax_users = 30\n\n'
                   f'[rater]\nbackend = "transformers"\nmodel = "{tiny_llama}"\n'
                   f'dtype = "float32"\n\n[candidates]\nk_neg = 2\nk_pos = 2\nbudget = 16\n\n'
                   f'[rate]\nbatch_size = 32\nmax_failure_share = 1.0\n')
    monkeypatch.setenv("LLMHNI_CACHE", str(tmp_path / "cache"))

    def call(*args):
        res = runner.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, (res.output, res.exception)
        return res.output

    call("profiles", run, "--config", cfg)
    scores = tmp_path / "scores.npy"
    np.save(scores, np.random.default_rng(0).normal(size=(30, 1682)).astype(np.float32))
    call("candidates", run, "--scores", scores, "--config", cfg)
    call("rate", run, "--config", cfg, "--quiet")

    out = call("rater", "assess", run, "--config", cfg, "--sample", 20, "--users", 30, "--quiet")
    assert "judgments: 120 rated, 0 stored before" in out
    assert "SIMULATED labels" in out and "coverage" in out
    f = json.loads((run / "assess" / "assess.json").read_text())
    assert f["sample"]["counts"] == {"clean": 20, "noisy": 20, "synthetic": 20}
    assert f["simulated"] is True and f["rater"]["settings"]["model"] == str(tiny_llama)
    assert f["coverage_costs"]["available"] and len(f["coverage_costs"]["targets"]) == 3
    assert (run / "assess" / "assess.png").stat().st_size > 1000
    # the run's own store is untouched: the sample's judgments live in RUN/assess
    assert json.loads(call("judgments", "stats", run, "--json"))["rows"] == 32

    again = call("rater", "assess", run, "--config", cfg, "--sample", 20, "--users", 30,
                 "--quiet")
    assert "judgments: 0 rated, 120 stored before" in again
    assert "earlier" in again or "stored judgments" in again  # the speed of the call that rated

    # bad input, one line each, before any engine starts
    one_line_error(cli("rater", "assess", run, "--config", cfg, "--sample", 5), "--sample 5")
    from llmhni_local.audit.records import AuditStore

    with AuditStore(run) as store:  # every user's pairs tuned something: none is held out
        store.mark_finetune([(u, i) for u, i in f_pairs(run)], "lora-all", "train")
    one_line_error(cli("rater", "assess", run, "--config", cfg), "no held-out users left")


def f_pairs(run: Path) -> list[tuple[int, int]]:
    """One training pair of each user of the run's data."""
    from llmhni_local.core.config import DataSettings
    from llmhni_local.stages.profiles import profiles_data

    lists = profiles_data(run, DataSettings()).user_item_lists("train")
    return [(u, int(items[0])) for u, items in enumerate(lists) if len(items)]


def test_assess_without_candidates_or_judgments(tmp_path):
    one_line_error(cli("rater", "assess", tmp_path), "candidates.parquet: no candidates")
    (tmp_path / "candidates.parquet").write_bytes(b"")
    one_line_error(cli("rater", "assess", tmp_path), "judgments.sqlite: no judgments")


def test_the_runs_own_settings_stand_in_for_a_config_file(tmp_path):
    from llmhni_local.assess.sample import run_overrides

    (tmp_path / "manifest.json").write_text(json.dumps({"settings": {
        "rater": {"model": "qwen", "adapter": None}, "tune": {"kind": "probe"},
        "train": {"epochs": 3}, "pipeline": {"out": "x"}}}))
    assert run_overrides(tmp_path) == {"rater.model": "qwen", "rater.adapter": None,
                                       "tune.kind": "probe"}
    assert run_overrides(tmp_path / "none") == {}


def test_help_lists_the_group():
    r = cli("rater", "--help")
    assert r.returncode == 0 and "assess" in r.stdout
