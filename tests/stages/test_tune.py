"""The pipeline's ``tune`` stage on the synthetic rated run and the tiny random Llama: with
``tune.kind = "none"`` nothing changes; with ``"probe"`` a probe is fitted on simulated labels
of training pairs that are not candidates, the rate stage rates with it, and the results
table names the rater as simulated-audit-tuned. Stage functions are called directly (the
full pipeline trains recommenders and embeds profiles, too slow here)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from llmhni_local.core.errors import ConfigError
from llmhni_local.stages.context import Run
from llmhni_local.stages.settings import RunConfig, load_run_config

TINY = {"rater.backend": "transformers", "rater.dtype": "float32"}


def _cfg(run_dir, tiny_llama, **extra) -> RunConfig:
    return load_run_config(None, {**TINY, "rater.model": str(tiny_llama),
                                  "pipeline.out": str(run_dir), **extra})


def _run(cfg: RunConfig, data) -> Run:
    run = Run(cfg, progress=False, log=lambda m: None)
    run._data = data  # the synthetic data the run folder's profiles were built from
    return run


@pytest.fixture(scope="module")
def tuned(_rated_template, synth_data, tiny_llama, tmp_path_factory):
    """An unrated copy of the synthetic run after the tune and rate stages with a probe."""
    from llmhni_local.stages import rate, tune

    run_dir = tmp_path_factory.mktemp("tune") / "run"
    shutil.copytree(_rated_template, run_dir)
    for name in ("judgments.sqlite", "rating.json"):  # the fake rater's rows
        (run_dir / name).unlink()
    cfg = _cfg(run_dir, tiny_llama, **{"tune.kind": "probe", "tune.labels": 60,
                                       "rate.max_failure_share": 1.0})
    run = _run(cfg, synth_data())
    return run, tune.run_stage(run), rate.run_stage(run)


def _keys(run: Run) -> Run:
    run.keys.update(candidates="c" * 64, profiles="p" * 64)
    return run


def test_kind_none_keeps_the_rate_key_and_does_nothing(tmp_path, tiny_llama, synth_data):
    from llmhni_local.core.config import to_dict
    from llmhni_local.stages import tune
    from llmhni_local.stages.key import stage_key
    from llmhni_local.stages.plan import missing_outputs

    run = _keys(_run(_cfg(tmp_path / "run", tiny_llama), synth_data()))
    cfg = run.cfg
    # the rate key as without a tune stage: no tune key, no [tune] settings
    before = stage_key("rate", {"rater": to_dict(cfg.rater), "rate": to_dict(cfg.rate),
                                "pipeline.rater": "llm", "pipeline.simulated_error": 0.0},
                       {"candidates": "c" * 64, "profiles": "p" * 64}, "rater-id")
    assert run.key("rate", content="rater-id") == before
    assert tune.run_stage(run) == {"kind": "none"} and not (tmp_path / "run" / "tune").exists()
    assert run.rater == cfg.rater and missing_outputs(tmp_path, "tune") == []
    # the untuned tune key reads [tune] only: new candidates do not re-run it
    k0 = run.key("tune")
    run.keys["candidates"] = "d" * 64
    assert run.key("tune") == k0


def test_kind_probe_puts_the_tune_key_into_the_rate_key(tmp_path, tiny_llama, synth_data):
    run = _keys(_run(_cfg(tmp_path / "run", tiny_llama, **{"tune.kind": "probe"}), synth_data()))
    run.keys["tune"] = "t" * 64
    k1 = run.key("rate", content="rater-id")
    run.keys["tune"] = "u" * 64  # a changed tune re-rates
    assert run.key("rate", content="rater-id") != k1
    untuned = _keys(_run(_cfg(tmp_path / "run", tiny_llama), synth_data()))
    assert untuned.key("rate", content="rater-id") != k1


def test_probe_is_fitted_on_simulated_labels_of_non_candidates(tuned):
    from llmhni_local.llmhni.candidates import load_candidates
    from llmhni_local.weights.probe import card_pairs
    from llmhni_local.weights.registry import is_probe_folder

    run, tune, _ = tuned
    folder = run.dir / "tune" / "probe"
    assert is_probe_folder(folder)
    saved = json.loads((run.dir / "tune" / "tune.json").read_text())
    assert saved["kind"] == "probe" and saved["simulated"] is True and saved["seed"] == 0
    assert saved["labels"] == 60 == sum(saved["counts"].values())
    assert set(saved["cv"]) == {"user", "item"} and saved["seconds"] > 0
    assert "kappa" in saved["cv"]["user"] and "auc_low" in saved["cv"]["item"]
    cands = load_candidates(run.dir / "candidates.parquet")
    candidates = set(zip(cands["user"].tolist(), cands["item"].tolist()))
    pairs = {tuple(p) for p in card_pairs(folder)}
    assert len(pairs) == 60 and not pairs & candidates
    train = {(int(u), int(i)) for u, i in run.data.train}
    assert pairs <= train
    card = json.loads((folder / "card.json").read_text())
    assert card["labels"]["simulated"] is True and card["base_model"]["name"] == run.cfg.rater.model


def test_rate_stage_rates_with_the_probe(tuned):
    from llmhni_local.llmhni.candidates import load_candidates

    run, _, rate = tuned
    assert run.rater.adapter == str(run.dir / "tune" / "probe")
    assert "+probe:probe@" in rate["model_id"] and rate["adapter"] == "probe"
    n = len(load_candidates(run.dir / "candidates.parquet"))
    with sqlite3.connect(run.dir / "judgments.sqlite") as conn:
        rows = conn.execute("select model_id, label, label_mass, p_high + p_medium + p_low "
                            "from judgments").fetchall()
    assert len(rows) == 2 * n
    # a probe's head spreads all its mass over the labels and has no label-token mass
    assert all(m == rate["model_id"] and lab is not None and mass is None
               and abs(total - 1) < 1e-5 for m, lab, mass, total in rows)


def test_results_table_and_report_mark_the_simulated_audit_tuned_rater(tuned, tmp_path,
                                                                       capsys):
    from llmhni_local.report import print_run_summary, results_table, write_report
    from llmhni_local.stages.train import rater_info

    run, _, _ = tuned
    info = rater_info(run)
    want = "+ probe tuned on 60 SIMULATED audit labels (training pairs that are not candidates"
    assert want in info["description"] and info["tag"] == "simulated-audit-tuned rater"
    assert info["methods"] == ["llmhni"]  # the default methods: only LLMHNI reads verdicts
    metrics = {"recall@20_mean": 0.1, "ndcg@20_mean": 0.1, "recall@10_mean": 0.1,
               "ndcg@10_mean": 0.1, "seeds": [{"epoch_seconds": 1.0}]}
    results = {"methods": {"bpr": metrics, "llmhni": metrics}, "simulated_rater": False,
               "rater": info}
    rows = results_table(results)
    assert rows[0][0] == "bpr" and rows[1][0] == "llmhni (simulated-audit-tuned rater)"
    out = tmp_path / "report-run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(results))
    write_report(out, run.data)
    report = (out / "report.md").read_text()
    assert want in report and "llmhni (simulated-audit-tuned rater)" in report
    print_run_summary(out)
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps the caption
    assert "simulated-audit-tuned rater" in printed and "SIMULATED audit labels" in printed


def test_manifest_records_the_probe_and_the_tune_settings(tuned):
    from llmhni_local.core.manifest import build_manifest
    from llmhni_local.pipeline.manifest import run_manifest
    from llmhni_local.weights.registry import model_hash

    run, _, rate = tuned
    run.content["rate"] = f"{rate['model_id']}:{rate['adapter']}"
    manifest = run_manifest(run, build_manifest)
    rater = manifest["models"]["rater"]
    assert rater["adapter"] == str(run.dir / "tune" / "probe")
    assert rater["tuned"]["sha256"] == model_hash(run.dir / "tune" / "probe")
    assert manifest["settings"]["tune"] == {"kind": "probe", "labels": 60, "seed": 0}


def test_config_errors(tmp_path, tiny_llama, synth_data):
    from llmhni_local.pipeline.runner import check_inputs_early

    with pytest.raises(ConfigError, match=r"rater.adapter .* must then be unset"):
        _cfg(tmp_path, tiny_llama, **{"tune.kind": "probe", "rater.adapter": str(tmp_path)})
    with pytest.raises(ConfigError, match="pipeline.rater = 'simulated' uses none"):
        _cfg(tmp_path, tiny_llama, **{"tune.kind": "probe", "pipeline.rater": "simulated"})
    with pytest.raises(ConfigError, match="tune.kind: 'lora' is not one of"):
        _cfg(tmp_path, tiny_llama, **{"tune.kind": "lora"})
    with pytest.raises(ConfigError, match="tune.labels must be >= 15"):
        _cfg(tmp_path, tiny_llama, **{"tune.labels": 10})
    # data without ratings: one line naming tune.kind, before any stage runs
    import dataclasses

    data = dataclasses.replace(synth_data(), train_rating=None)
    run = _run(_cfg(tmp_path / "run", tiny_llama, **{"tune.kind": "probe"}), data)
    with pytest.raises(ConfigError, match=r"tune.kind = 'probe' .* has none") as info:
        check_inputs_early(run)
    assert "\n" not in str(info.value)
    check_inputs_early(_run(_cfg(tmp_path / "run", tiny_llama), data))  # untuned: fine
