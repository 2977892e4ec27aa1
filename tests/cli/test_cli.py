"""The command line's exit codes and one-line errors (run as a user would, in a subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_help_is_fast_and_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("train", "data"):
        assert cmd in r.stdout


def test_data_info_json():
    r = run("data", "info", "--data", "ml100k", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["train"] == 79619 and info["train_noise"] == 12663


@pytest.mark.parametrize("args,needle", [
    (("train", "--out", "{tmp}/x", "--data", "nope"), "data.source"),
    (("train", "--out", "{tmp}/x", "--epochs", "0"), "train.epochs"),
    (("train", "--out", "{tmp}/x", "--model", "gcn"), "model.name"),
    (("train", "--out", "{tmp}/x", "--config", "{tmp}/missing.toml"), "missing.toml"),
    (("data", "info", "--data", "files:{tmp}/none.csv"), "none.csv"),
])
def test_bad_input_one_line_error_exit_2_no_output(tmp_path, args, needle):
    r = run(*(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_unknown_setting_in_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlearning_rate = 0.1\n")
    r = run("train", "--out", str(tmp_path / "x"), "--config", str(cfg))
    assert r.returncode == 2 and "train.learning_rate" in r.stderr and str(cfg) in r.stderr


def test_train_writes_run_folder(tmp_path):
    out = tmp_path / "run"
    r = run("train", "--out", str(out), "--max-users", "100", "--epochs", "2", "--eval-every", "1",
            "--dim", "8", "--quiet")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"val", "test", "best_epoch", "epoch_seconds", "config"} <= set(metrics)
    assert (out / "manifest.json").is_file() and (out / "model.pt").is_file()
    assert "recall@20" in r.stdout


SET_COMMANDS = ("run", "train", "profiles", "embed", "candidates", "rate", "verdicts decide",
                "finetune-rater", "data info")


@pytest.mark.parametrize("command", SET_COMMANDS)
def test_every_settings_command_takes_config_and_set(command):
    r = run(*command.split(), "--help")
    assert r.returncode == 0, r.stderr
    assert "--config" in r.stdout and "--set" in r.stdout


def test_set_overrides_flags_and_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nmax_users = 40\n[rater]\nbackend = \"transformers\"\n")
    r = run("data", "info", "--config", str(cfg), "--max-users", "30",
            "--set", "data.max_users=20", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["users"] == 20


def test_bad_set_is_one_line_error(tmp_path):
    r = run("train", "--out", str(tmp_path / "x"), "--set", "train.epochs")
    assert r.returncode == 2 and "table.key=value" in r.stderr
    assert not (tmp_path / "x").exists()


def test_rate_says_when_it_reads_otherwise_than_the_run_was_set_up(tmp_path):
    from llmhni_local.cli.llm import unlike_the_run
    from llmhni_local.cli.options import run_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert unlike_the_run(run_dir, run_config(None, None)) == ""  # no manifest: nothing to say
    (run_dir / "manifest.json").write_text(json.dumps({"settings": {
        "rate": {"mode": "likelihood"}, "rater": {"backend": "transformers", "model": "smollm2"}}}))
    note = unlike_the_run(run_dir, run_config(None, ["rate.mode=judge", "rater.backend=vllm"]))
    assert "rate.mode = 'judge' (the run's: 'likelihood')" in note
    assert "rater.backend = 'vllm' (the run's: 'transformers')" in note
    assert "rater.model" not in note  # the same model is not named
    same = run_config(None, ["rate.mode=likelihood", "rater.backend=transformers",
                             "rater.model=smollm2", "verdicts.rule=threshold"])
    assert unlike_the_run(run_dir, same) == ""
