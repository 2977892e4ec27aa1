"""The pipeline end to end on a small slice of MovieLens-100K, and its stage caching."""

import json
import sqlite3

import pytest

pytest.importorskip("sentence_transformers")

from llmhni_local.pipeline.runner import run_pipeline  # noqa: E402
from llmhni_local.stages.plan import STAGES  # noqa: E402
from llmhni_local.stages.settings import load_run_config  # noqa: E402

SMALL = {
    "data.max_users": 60,
    "embedder.backend": "sentence-transformers",
    "train.epochs": 2, "train.eval_every": 1, "train.min_epochs": 1, "train.patience": 1,
    "model.dim": 16,
    "candidates.budget": 40,
    "llmhni.align.epochs": 2,
    "tune.kind": "none",  # the demo tunes a probe on SmolLM2; tests that want it say so
}


def _cfg(tmp_path, **extra):
    try:
        from llmhni_local.data.movielens import ml100k_dir

        ml100k_dir()
    except Exception as exc:
        pytest.skip(f"MovieLens-100K unavailable: {exc}")
    return load_run_config("configs/ml100k.toml", {**SMALL, "pipeline.out": str(tmp_path / "run"), **extra})


def test_simulated_pipeline_runs_then_reuses_every_stage(tmp_path):
    cfg = _cfg(tmp_path, **{"pipeline.rater": "simulated", "pipeline.simulated_error": 0.2,
                            "pipeline.methods": ["bpr", "tce", "llmhni", "llmhni-no-denoise"]})
    run = run_pipeline(cfg, progress=False, log=lambda _: None)
    assert all(run.ran[s] for s in STAGES)
    out = run.dir
    results = json.loads((out / "results.json").read_text())
    assert results["simulated_rater"] is True
    assert set(results["methods"]) == {"bpr", "tce", "llmhni", "llmhni-no-denoise"}
    # bpr is Rec_pre itself: the same test metrics
    rec_pre = json.loads((out / "rec_pre" / "metrics.json").read_text())
    assert results["methods"]["bpr"]["recall@20_mean"] == rec_pre["test"]["recall@20"]
    report = (out / "report.md").read_text()
    assert "SIMULATED" in report and (out / "plots" / "training_curves.png").stat().st_size > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["rater"]["simulated"] is True and manifest["prompts"]
    llmhni = json.loads((out / "train" / "llmhni" / "seed0" / "manifest.json").read_text())
    assert llmhni["simulated"] is True and llmhni["denoise"]["removed"] > 0

    # unchanged inputs: no stage does any work
    mtime = (out / "train" / "llmhni" / "seed0" / "model.pt").stat().st_mtime_ns
    again = run_pipeline(cfg, progress=False, log=lambda _: None)
    assert not any(again.ran.values())
    assert (out / "train" / "llmhni" / "seed0" / "model.pt").stat().st_mtime_ns == mtime

    # --from train: train and report run again, nothing before them
    third = run_pipeline(cfg, start="train", progress=False, log=lambda _: None)
    assert [s for s in STAGES if third.ran[s]] == ["train", "report"]

    # a changed setting re-runs its stage and what depends on it, nothing upstream
    changed = load_run_config("configs/ml100k.toml", {**SMALL, "pipeline.out": str(out),
                              "pipeline.rater": "simulated", "pipeline.simulated_error": 0.2,
                              "pipeline.methods": ["bpr", "tce", "llmhni", "llmhni-no-denoise"],
                              "candidates.budget": 30})
    fourth = run_pipeline(changed, progress=False, log=lambda _: None)
    assert [s for s in STAGES if fourth.ran[s]] == ["candidates", "rate", "verdicts", "train", "report"]


def test_llm_pipeline_with_tiny_model(tmp_path, tiny_llama):
    cfg = _cfg(tmp_path, **{"rater.backend": "transformers", "rater.model": str(tiny_llama),
                            "rater.dtype": "float32", "rate.max_failure_share": 1.0,
                            "pipeline.methods": ["bpr", "llmhni"]})
    run = run_pipeline(cfg, progress=False, log=lambda _: None)
    with sqlite3.connect(run.dir / "judgments.sqlite") as conn:
        n = conn.execute("select count(*) from judgments").fetchone()[0]
    cands = json.loads((run.dir / "stages" / "candidates.json").read_text())["summary"]["pairs"]
    assert n == 2 * cands  # both views of every candidate pair are stored
    counts = json.loads((run.dir / "verdicts.json").read_text())
    total = sum(counts[k]["total"] for k in ("observed", "unobserved"))
    assert total == cands
    assert json.loads((run.dir / "results.json").read_text())["simulated_rater"] is False
    # the CLI and the pipeline write the same stage outputs
    assert json.loads((run.dir / "candidates.json").read_text())["pairs"] == cands
    assert json.loads((run.dir / "profiles" / "manifest.json").read_text())["data_settings"]
    # a deleted store re-runs the rate stage (and what reads it), though no setting changed
    (run.dir / "judgments.sqlite").unlink()
    again = run_pipeline(cfg, progress=False, log=lambda _: None)
    assert [s for s in STAGES if again.ran[s]] == ["rate", "verdicts", "train", "report"]
    assert (run.dir / "judgments.sqlite").is_file()


def test_bad_setting_fails_before_any_work(tmp_path):
    from llmhni_local.core.errors import ConfigError, UserError

    with pytest.raises(ConfigError, match="pipeline.methods"):
        _cfg(tmp_path, **{"pipeline.methods": ["bpr", "magic"]})
    cfg = _cfg(tmp_path, **{"rater.model": str(tmp_path / "no-such-model")})
    with pytest.raises(UserError):
        run_pipeline(cfg, progress=False, log=lambda _: None)
    assert not (tmp_path / "run" / "rec_pre").exists()


@pytest.mark.parametrize("extra,setting", [
    ({"pipeline.seeds": []}, "pipeline.seeds"),
    ({"data.synthetic_noise": 0.6}, "data.synthetic_noise"),
    ({"data.synthetic_noise": -0.1}, "data.synthetic_noise"),
    ({"candidates.k_neg": 0, "candidates.k_pos": 0, "candidates.k_pos_share": 0.0}, "k_pos_share"),
    ({"candidates.k_pos_share": 1.5}, "candidates.k_pos_share"),
    ({"candidates.budget": -1}, "candidates.budget"),
])
def test_bad_input_is_one_line_naming_the_setting(tmp_path, extra, setting):
    from llmhni_local.core.errors import ConfigError

    with pytest.raises(ConfigError, match=setting) as info:
        _cfg(tmp_path, **extra)
    assert "\n" not in str(info.value)


def test_oracle_needs_flags_and_fails_before_any_stage(tmp_path, monkeypatch):
    from llmhni_local.core.errors import ConfigError
    from llmhni_local.stages.context import Run

    cfg = _cfg(tmp_path, **{"pipeline.methods": ["bpr", "oracle"], "pipeline.rater": "simulated"})
    real = Run.data.fget

    def no_flags(self):
        return real(self).replace(train_noise=None)

    monkeypatch.setattr(Run, "data", property(no_flags))
    with pytest.raises(ConfigError, match="oracle"):
        run_pipeline(cfg, progress=False, log=lambda _: None)
    assert not (tmp_path / "run" / "stages").exists()


def test_oracle_coverage_and_per_user_metrics(tmp_path):
    import numpy as np

    cfg = _cfg(tmp_path, **{"pipeline.rater": "simulated", "data.synthetic_noise": 0.2,
                            "pipeline.methods": ["bpr", "oracle", "llmhni"],
                            "candidates.k_pos_share": 0.3, "candidates.budget": 0})
    run = run_pipeline(cfg, progress=False, log=lambda _: None)
    out = run.dir
    oracle = json.loads((out / "train" / "oracle" / "seed0" / "manifest.json").read_text())
    flagged = int(run.data.train_noise.sum())
    assert oracle["oracle"]["removed"] == flagged > 0
    report = json.loads((out / "report.json").read_text())
    cov = report["identification"]["coverage"]
    assert cov["flagged"] == flagged and 0 < cov["coverage"] <= 1
    # the share makes more observed candidates than the count alone (k_pos = 5)
    cands = json.loads((out / "stages" / "candidates.json").read_text())["summary"]
    assert cands["observed"] > 5 * 60 and cands["coverage"]["coverage"] == cov["coverage"]
    for m in ("bpr", "oracle", "llmhni"):
        z = np.load(out / "train" / m / "seed0" / "per_user_test.npz")
        metrics = json.loads((out / "train" / m / "seed0" / "metrics.json").read_text())
        assert z["recall@20"].mean() == pytest.approx(metrics["test"]["recall@20"])
    assert "BPR->oracle" in (out / "report.md").read_text()
    # a second run with another method list retrains nothing it already has
    logs = []
    extra = {"pipeline.rater": "simulated", "data.synthetic_noise": 0.2,
             "pipeline.methods": ["oracle", "llmhni"], "candidates.k_pos_share": 0.3,
             "candidates.budget": 0}
    cfg2 = _cfg(tmp_path, **extra)
    run_pipeline(cfg2, progress=False, log=logs.append)
    assert "[train] oracle seed 0: unchanged, reused" in logs
    assert "[train] llmhni seed 0: unchanged, reused" in logs
    # LLMHNI under another rater error overwrites train/llmhni/seed0; the first error back
    # is copied from the keyed store, not retrained (the bench's curves depend on it)
    first = json.loads((out / "train" / "llmhni" / "seed0" / "metrics.json").read_text())
    run_pipeline(_cfg(tmp_path, **{**extra, "pipeline.simulated_error": 0.3}), progress=False,
                 log=lambda _: None)
    logs.clear()
    run_pipeline(cfg2, progress=False, log=logs.append)
    assert "[train] llmhni seed 0: reused from train_store/" in logs
    assert not any(m.startswith("[train] llmhni seed 0") and "reused" not in m for m in logs)
    back = json.loads((out / "train" / "llmhni" / "seed0" / "metrics.json").read_text())
    assert back["test"] == first["test"]


def test_tuned_rater_pipeline_marks_the_rater_and_retunes(tmp_path, tiny_llama):
    """tune.kind = "probe" end to end: the probe is fitted on simulated labels of training
    pairs that are not candidates, the rate stage rates with it, the report, results.json and
    manifest name it, and a changed [tune] re-rates without touching earlier stages."""
    # the demo reads with the likelihood reader; the probe tunes the judge
    tuned = {"rater.backend": "transformers", "rater.model": str(tiny_llama),
             "rater.dtype": "float32", "rate.max_failure_share": 1.0, "rate.mode": "judge",
             "verdicts.rule": "argmax",
             "pipeline.methods": ["bpr", "llmhni"], "tune.kind": "probe", "tune.labels": 100}
    cfg = _cfg(tmp_path, **tuned)
    run = run_pipeline(cfg, progress=False, log=lambda _: None)
    assert run.ran["tune"] and (run.dir / "tune" / "probe" / "card.json").is_file()
    tune = json.loads((run.dir / "tune" / "tune.json").read_text())
    assert tune["labels"] == 100 and tune["pool"] == "training pairs that are not candidates"
    rating = json.loads((run.dir / "stages" / "rate.json").read_text())["summary"]
    assert "+probe:probe@" in rating["model_id"]
    results = json.loads((run.dir / "results.json").read_text())
    assert results["rater"]["tag"] == "simulated-audit-tuned rater"
    report = (run.dir / "report.md").read_text()
    assert "probe tuned on 100 SIMULATED audit labels (training pairs that are not candidates" \
        in report and "llmhni (simulated-audit-tuned rater)" in report
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["models"]["rater"]["tuned"]["sha256"] and manifest["settings"]["tune"][
        "labels"] == 100
    again = run_pipeline(cfg, progress=False, log=lambda _: None)
    assert not any(again.ran.values())
    reseeded = run_pipeline(_cfg(tmp_path, **tuned, **{"tune.seed": 1}), progress=False,
                            log=lambda _: None)
    assert [s for s in STAGES if reseeded.ran[s]] == ["tune", "rate", "verdicts", "train",
                                                       "report"]


def test_simulated_rater_graded_by_auc(tmp_path):
    import pandas as pd

    from llmhni_local.core.errors import ConfigError

    quiet = {"progress": False, "log": lambda _: None}
    base = {"pipeline.rater": "simulated", "pipeline.methods": ["bpr", "llmhni"],
            "candidates.k_pos_share": 0.3, "candidates.budget": 0}
    run = run_pipeline(_cfg(tmp_path, **base), **quiet)
    cols = ["user", "item", "kind", "verdict"]
    exact = pd.read_parquet(run.dir / "verdicts.parquet")[cols]
    keep = float((exact["verdict"] == "hard").mean())  # the true share of clean candidates
    rule = {"verdicts.rule": "threshold", "verdicts.tau_source": "share",
            "verdicts.target_share": keep}

    # AUC 1 thresholded at the true share: the error-0 verdicts, exactly
    one = run_pipeline(_cfg(tmp_path, **base, **rule, **{"pipeline.simulated_auc": 1.0}), **quiet)
    assert [s for s in STAGES if one.ran[s]] == ["rate", "verdicts", "train", "report"]
    got = pd.read_parquet(run.dir / "verdicts.parquet")
    assert got[cols].equals(exact) and got["simulated"].all()
    summary = json.loads((run.dir / "verdicts.json").read_text())
    assert summary["simulated"] is True and summary["auc"] == 1.0
    assert summary["realised_auc"] == 1.0 and summary["realised_error_rate"] == 0.0
    assert summary["share_noisy"] == pytest.approx(1 - keep)
    assert summary["verdict_rule"]["target_share"] == keep
    assert summary["skipped_unobserved"] > 0  # unobserved candidates get no simulated verdict
    results = json.loads((run.dir / "results.json").read_text())
    assert results["simulated_rater"] is True and results["rater"]["auc"] == 1.0
    assert results["rater"]["description"].startswith("SIMULATED rater (AUC 1, realised 1.000")
    assert "SIMULATED rater (AUC 1" in (run.dir / "report.md").read_text()

    # another AUC is another rate key; what it reads upstream is reused
    cfg7 = _cfg(tmp_path, **base, **rule, **{"pipeline.simulated_auc": 0.7})
    seven = run_pipeline(cfg7, **quiet)
    assert [s for s in STAGES if seven.ran[s]] == ["rate", "verdicts", "train", "report"]
    summary7 = json.loads((run.dir / "verdicts.json").read_text())
    assert summary7["auc"] == 0.7 and 0.55 < summary7["realised_auc"] < 0.85
    assert summary7["share_noisy"] == pytest.approx(1 - keep, abs=1e-3)
    first = pd.read_parquet(run.dir / "verdicts.parquet")[cols]
    assert not first.equals(exact)
    # seeded by train.seed: drawn again, the same verdicts
    run_pipeline(cfg7, start="verdicts", **quiet)
    assert pd.read_parquet(run.dir / "verdicts.parquet")[cols].equals(first)

    # scores have no labels: the argmax rule is refused in one line naming the setting
    with pytest.raises(ConfigError, match="verdicts.rule = 'threshold'") as info:
        run_pipeline(_cfg(tmp_path, **base, **{"pipeline.simulated_auc": 0.7,
                                               "verdicts.rule": "argmax"}), **quiet)
    assert "\n" not in str(info.value)


def test_the_demo_default_reads_with_the_likelihood_reader(tmp_path, tiny_llama):
    """configs/ml100k.toml's rater path end to end on the tiny Llama: readings with scores and
    no labels, threshold verdicts at the share, the mode in the manifest."""
    cfg = _cfg(tmp_path, **{"rater.model": str(tiny_llama), "rater.dtype": "float32",
                            "pipeline.methods": ["bpr", "llmhni"]})
    assert cfg.rate.mode == "likelihood" and cfg.verdicts.rule == "threshold"
    run = run_pipeline(cfg, progress=False, log=lambda _: None)
    rating = json.loads((run.dir / "rating.json").read_text())
    assert rating["mode"] == "likelihood" and rating["failures"] == 0
    counts = json.loads((run.dir / "verdicts.json").read_text())
    obs = counts["observed"]
    assert 0 < obs["noisy"] < obs["total"]  # the share rule splits them
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["rate_mode"] == "likelihood" and "device" in manifest


def test_a_seeded_run_repeats_its_recall_under_load(tmp_path):
    """The same seed gives the same figure: a seeded LLMHNI run repeated in a fresh folder, the
    second time beside a process that keeps a core busy (the load that once made the
    alignment's two BLAS threads sum in another order), gives the same aligned vectors and the
    same Recall@20."""
    import subprocess
    import sys

    import numpy as np
    import torch

    extra = {"train.threads": 2, "pipeline.rater": "simulated", "pipeline.simulated_error": 0.2,
             "pipeline.methods": ["llmhni"]}

    def once(folder):
        run = run_pipeline(_cfg(folder, **extra), progress=False, log=lambda _: None)
        results = json.loads((run.dir / "results.json").read_text())
        z = np.load(run.dir / "align" / "aligned.npz")
        return results["methods"]["llmhni"]["recall@20_mean"], z["users"], z["items"]

    threads = torch.get_num_threads()
    first = once(tmp_path / "a")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        second = once(tmp_path / "b")
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(threads)
    assert np.array_equal(first[1], second[1]) and np.array_equal(first[2], second[2])
    assert round(first[0], 4) == round(second[0], 4)
    assert first[0] > 0  # a trained model, not an empty result



def test_unknown_embedder_prompt_fails_before_any_stage(tmp_path):
    """A prompt name the embedder does not have is refused before profiles are written (and
    summarised), not after."""
    from llmhni_local.core.errors import ConfigError

    cfg = _cfg(tmp_path, **{"embedder.user_prompt": "query"})  # MiniLM has no prompts
    with pytest.raises(ConfigError, match="embedder.user_prompt = 'query' is not a prompt"):
        run_pipeline(cfg, progress=False, log=lambda _: None)
    assert not (tmp_path / "run" / "stages").exists()
