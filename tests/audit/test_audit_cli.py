"""The command lines: ``audit export|import|report|simulate``, ``finetune-rater`` and
``adapters validate``, mounted as the lead mounts them."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from llmhni_local.audit.importer import ImportRefused
from llmhni_local.cli import audit as audit_cli
from llmhni_local.cli import finetune as finetune_cli


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    app.add_typer(audit_cli.app, name="audit")
    app.command("finetune-rater")(finetune_cli.finetune_rater)
    app.add_typer(finetune_cli.adapters_app, name="adapters")
    runner = CliRunner()

    def call(*args):
        return runner.invoke(app, [str(a) for a in args])

    return call


def test_export_fill_import_report(cli, rated_run, tmp_path):
    sample = tmp_path / "sample.csv"
    res = cli("audit", "export", rated_run, "--n", 20, "--out", sample)
    assert res.exit_code == 0, res.output
    assert "20 pairs" in res.stdout and "audit import" in res.stdout
    frame = pd.read_csv(sample, keep_default_na=False)
    assert len(frame) == 20 and (frame["label"] == "").all()
    assert "model_label_user" not in frame.columns
    frame["label"] = ["High", "Low"] * 10
    frame["annotator"] = "ana"
    frame.to_csv(sample, index=False)
    res = cli("audit", "import", rated_run, sample)
    assert res.exit_code == 0, res.output
    assert "20 labels stored" in res.stdout
    res = cli("audit", "report", rated_run)
    assert res.exit_code == 0, res.output
    assert "fake@0" in res.stdout and (rated_run / "audit" / "report.md").is_file()
    assert (rated_run / "audit" / "confusion.png").is_file()
    shown = tmp_path / "shown.jsonl"
    res = cli("audit", "export", rated_run, "--n", 5, "--out", shown, "--show-model-labels")
    assert res.exit_code == 0 and "model_label_user" in shown.read_text()


def test_a_bad_file_lists_its_rows_and_stores_nothing(cli, rated_run, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,label\n0,1,High\n0,1,Low\n999,1,High\n2,2,Maybe\n")
    res = cli("audit", "import", rated_run, bad)
    assert res.exit_code != 0 and isinstance(res.exception, ImportRefused)
    assert str(res.exception).endswith("4 bad rows (of 4); nothing was imported")
    for line in ("line 2: duplicate pair", "line 3: duplicate pair", "line 4: unknown user",
                 "line 5: label 'Maybe'"):
        assert line in res.stderr
    assert len((rated_run / "audit" / "rejected.txt").read_text().splitlines()) == 4
    res = cli("audit", "report", rated_run)
    assert res.exit_code != 0 and "no audited labels" in str(res.exception)


def test_simulate_needs_the_runs_data(cli, rated_run):
    res = cli("audit", "simulate", rated_run, "--n", 5)
    assert res.exit_code != 0 and "cannot tell which data" in str(res.exception)
    res = cli("audit", "simulate", rated_run, "--pool", "everything")
    assert res.exit_code != 0 and "--pool must be" in str(res.exception)


def test_finetune_rater_and_adapters_validate(cli, rated_run, synth_data, tiny_llama, tmp_path):
    from llmhni_local.audit.export import write_table
    from llmhni_local.audit.importer import import_labels
    from llmhni_local.audit.simulated_audits import simulate_sample

    frame, _ = simulate_sample(rated_run, 60, pool="train", data=synth_data())
    import_labels(rated_run, write_table(frame, tmp_path / "sim.csv"))
    config = tmp_path / "ft.toml"
    config.write_text("[finetune]\nepochs = 1\nlast_layers = 1\nmin_val_users = 2\n")
    out = tmp_path / "adapters" / "cli-tuned"
    res = cli("finetune-rater", rated_run, "--out", out, "--base", tiny_llama, "--config", config,
              "--quiet")
    assert res.exit_code == 0, res.output
    assert "validation kappa" in res.stdout and "--adapter" in res.stdout
    card = json.loads((out / "card.json").read_text())
    assert card["settings"]["epochs"] == 1 and card["settings"]["last_layers"] == 1
    res = cli("adapters", "validate", out)
    assert res.exit_code == 0 and "OK (r 16, alpha 32" in res.stdout
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["modules_to_save"] = ["lm_head"]
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    res = cli("adapters", "validate", bad)
    assert res.exit_code != 0 and "modules_to_save is set" in res.stderr
    assert "1 problem; vLLM cannot serve it" in str(res.exception)
    res = cli("adapters", "validate", out, "--max-lora-rank", 8)
    assert res.exit_code != 0 and "rank 16 is above the engine's max_lora_rank (8)" in res.stderr
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[finetune]\nepochz = 1\n")
    res = cli("finetune-rater", rated_run, "--out", tmp_path / "x", "--config", bad_cfg)
    assert res.exit_code != 0 and "unknown setting" in str(res.exception)


def test_finetune_rater_kind(cli, rated_run, tmp_path):
    res = cli("finetune-rater", rated_run, "--out", tmp_path / "a", "--kind", "sft")
    assert res.exit_code != 0 and "unknown kind" in str(res.exception)
    res = cli("finetune-rater", rated_run, "--out", tmp_path / "a", "--kind", "probe",
              "--epochs", 2)
    assert res.exit_code != 0 and "--epochs: LoRA settings" in str(res.exception)
    res = cli("finetune-rater", rated_run, "--out", tmp_path / "a", "--kind", "probe")
    assert res.exit_code != 0 and "no audited labels" in str(res.exception)
    assert not (tmp_path / "a").exists()
