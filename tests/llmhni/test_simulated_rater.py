import inspect
import json

import numpy as np
import pandas as pd
import pytest

from llmhni_local.core.errors import ConfigError, DataError
from llmhni_local.llmhni.denoise import denoised_edges
from llmhni_local.verdicts.simulated import simulate_verdicts, write_simulated_verdicts

CAND = [("user", np.int64), ("item", np.int64), ("kind", "U10")]


def _world(n_edges=20000, seed=0):
    rng = np.random.default_rng(seed)
    edges = np.unique(np.stack([rng.integers(0, 500, n_edges), rng.integers(0, 400, n_edges)], 1), axis=0)
    noise = rng.random(len(edges)) < 0.2
    cand = np.empty(len(edges) + 50, dtype=CAND)
    cand["user"][: len(edges)], cand["item"][: len(edges)] = edges[:, 0], edges[:, 1]
    cand["kind"][: len(edges)] = "observed"
    cand["user"][len(edges):], cand["item"][len(edges):] = 600, np.arange(50)  # user 600: no edge
    cand["kind"][len(edges):] = "unobserved"
    return edges, noise, cand


def test_error_rate_and_seed_have_no_default():
    params = inspect.signature(simulate_verdicts).parameters
    assert params["error_rate"].default is inspect.Parameter.empty
    assert params["seed"].default is inspect.Parameter.empty
    edges, noise, cand = _world(100)
    with pytest.raises(TypeError):
        simulate_verdicts(cand, edges, noise, seed=0)


def test_exact_at_zero_and_always_wrong_at_one():
    edges, noise, cand = _world()
    v, info = simulate_verdicts(cand, edges, noise, error_rate=0.0, seed=0)
    assert len(v) == len(edges) and (v["kind"] == "observed").all()
    assert np.array_equal(v["verdict"] == "noisy", noise)
    assert v["simulated"].all() and np.isnan(v["p_hard"]).all()
    assert info["simulated"] is True and info["skipped_unobserved"] == 50
    assert info["realised_error_rate"] == 0.0 and info["truly_noisy"] == int(noise.sum())
    v1, info1 = simulate_verdicts(cand, edges, noise, error_rate=1.0, seed=0)
    assert np.array_equal(v1["verdict"] == "noisy", ~noise) and info1["realised_error_rate"] == 1.0


@pytest.mark.parametrize("e", [0.1, 0.3])
def test_error_rate_close_to_e_and_seeded(e):
    edges, noise, cand = _world()
    v, info = simulate_verdicts(cand, edges, noise, error_rate=e, seed=1)
    wrong = (v["verdict"] == "noisy") != noise
    n = len(wrong)
    assert abs(wrong.mean() - e) < 4 * np.sqrt(e * (1 - e) / n)
    assert info["realised_error_rate"] == pytest.approx(wrong.mean())
    # errors fall on both classes alike
    assert abs(wrong[noise].mean() - e) < 0.05 and abs(wrong[~noise].mean() - e) < 0.05
    v2, _ = simulate_verdicts(cand, edges, noise, error_rate=e, seed=1)
    assert np.array_equal(v["verdict"], v2["verdict"])


def test_candidate_order_and_frame_input():
    edges = np.array([[0, 0], [0, 1], [1, 2]])
    noise = np.array([False, True, False])
    df = pd.DataFrame({"user": [1, 0, 0], "item": [2, 1, 5], "kind": ["observed", "observed", "unobserved"]})
    v, info = simulate_verdicts(df, edges, noise, error_rate=0.0, seed=0)
    assert v[["user", "item"]].tolist() == [(1, 2), (0, 1)]
    assert v["verdict"].tolist() == ["hard", "noisy"] and info["skipped_unobserved"] == 1


def test_bad_inputs():
    edges, noise = np.array([[0, 0]]), np.array([False])
    cand = np.array([(0, 1, "observed")], dtype=CAND)
    with pytest.raises(DataError, match="not a training edge"):
        simulate_verdicts(cand, edges, noise, error_rate=0.0, seed=0)
    with pytest.raises(ConfigError):
        simulate_verdicts(cand, edges, noise, error_rate=1.5, seed=0)
    with pytest.raises(DataError):
        simulate_verdicts(cand, edges, np.array([False, True]), error_rate=0.0, seed=0)


def test_written_files_are_marked_and_feed_denoising(tmp_path):
    edges, noise, cand = _world(2000)
    v, info = simulate_verdicts(cand, edges, noise, error_rate=0.0, seed=0)
    path = tmp_path / "verdicts.parquet"
    write_simulated_verdicts(path, v, info)
    df = pd.read_parquet(path)
    assert df["simulated"].all() and len(df) == len(v)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["simulated"] is True and meta["error_rate"] == 0.0
    gp, rep = denoised_edges(edges, df)
    assert rep.simulated is True and len(rep.added) == 0
    assert len(gp) == len(edges) - int(noise.sum())  # the exact rater removes exactly the noise
    with pytest.raises(DataError):
        write_simulated_verdicts(path, v, {**info, "simulated": False})


# ---------------------------------------------------------------------------- graded by AUC
from llmhni_local.verdicts.simulated import (  # noqa: E402
    binormal_separation,
    simulate_auc_verdicts,
    simulate_scores,
)


def _share_rule(target_share):
    """The threshold-at-share rule the pipeline applies (verdicts.rules.tau_from_share)."""
    from llmhni_local.verdicts.rules import tau_from_share

    def decide(scored):
        tau, _ = tau_from_share(scored["score"], target_share)
        return scored["score"] >= tau, {"tau": tau}

    return decide


def _hanley_mcneil_se(a, n_pos, n_neg):
    """Standard error of an empirical AUC (Hanley and McNeil, 1982)."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return np.sqrt((a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a))
                   / (n_pos * n_neg))


@pytest.mark.parametrize("a", [0.5, 0.7, 0.9])
def test_empirical_auc_is_within_sampling_error(a):
    from llmhni_local.eval.stats import auc

    edges, noise, cand = _world()
    scored, info = simulate_scores(cand, edges, noise, auc=a, seed=3)
    assert len(scored) == len(edges) and info["skipped_unobserved"] == 50
    assert np.array_equal(scored["truly_noisy"], noise)
    clean, noisy = scored["score"][~noise], scored["score"][noise]
    realised = auc(scored["score"], ~noise)  # P(a clean score above a noisy one)
    assert info["realised_auc"] == pytest.approx(realised)
    se = _hanley_mcneil_se(a, len(clean), len(noisy))
    assert abs(realised - a) < 4 * se, (realised, a, se)
    assert info["simulated"] is True and info["auc"] == a
    # the binormal model: both classes have unit spread, the clean mean is d higher
    d = binormal_separation(a)
    assert clean.std() == pytest.approx(1.0, abs=0.05) and noisy.std() == pytest.approx(1.0, abs=0.05)
    assert clean.mean() - noisy.mean() == pytest.approx(d, abs=0.08)


def test_auc_one_at_the_true_share_reproduces_the_exact_rater():
    edges, noise, cand = _world()
    scored, info = simulate_scores(cand, edges, noise, auc=1.0, seed=0)
    assert scored["score"][noise].max() < scored["score"][~noise].min()  # separated outright
    assert info["realised_auc"] == 1.0
    exact, _ = simulate_verdicts(cand, edges, noise, error_rate=0.0, seed=0)
    clean_share = float((~noise).mean())
    v, summary = simulate_auc_verdicts(cand, edges, noise, auc=1.0, seed=5,
                                       decide=_share_rule(clean_share))
    for col in ("user", "item", "kind", "verdict", "simulated"):  # p_hard: NaN in both
        assert np.array_equal(v[col], exact[col]), col
    assert np.isnan(v["p_hard"]).all() and np.isnan(exact["p_hard"]).all()
    assert summary["realised_error_rate"] == 0.0
    assert summary["share_noisy"] == pytest.approx(noise.mean())
    # the tau the share picks is the lowest clean score (seed 5's draws, not seed 0's)
    scored5, _ = simulate_scores(cand, edges, noise, auc=1.0, seed=5)
    assert summary["verdict_rule"]["tau"] == scored5["score"][~noise].min()


def test_auc_verdicts_follow_the_rule_and_err_more_at_lower_auc():
    edges, noise, cand = _world()
    errors = []
    for a in (0.6, 0.8, 0.95):
        v, summary = simulate_auc_verdicts(cand, edges, noise, auc=a, seed=1,
                                           decide=_share_rule(0.8))
        assert v["simulated"].all() and np.isnan(v["p_hard"]).all()
        assert (v["kind"] == "observed").all() and len(v) == len(edges)  # unobserved: none
        assert summary["share_hard"] == pytest.approx(0.8, abs=1e-3)
        errors.append(summary["realised_error_rate"])
    assert errors[0] > errors[1] > errors[2]


def test_auc_scores_are_seeded():
    edges, noise, cand = _world(3000)
    a, _ = simulate_scores(cand, edges, noise, auc=0.8, seed=7)
    b, _ = simulate_scores(cand, edges, noise, auc=0.8, seed=7)
    c, _ = simulate_scores(cand, edges, noise, auc=0.8, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a["score"], c["score"])
    params = inspect.signature(simulate_scores).parameters
    assert params["auc"].default is inspect.Parameter.empty
    assert params["seed"].default is inspect.Parameter.empty


@pytest.mark.parametrize("a", [0.49, 1.01, -1.0])
def test_bad_auc_is_a_one_line_config_error(a):
    edges, noise, cand = _world(200)
    with pytest.raises(ConfigError, match="pipeline.simulated_auc") as info:
        simulate_scores(cand, edges, noise, auc=a, seed=0)
    assert "\n" not in str(info.value)


def test_rule_giving_the_wrong_shape_is_refused():
    edges, noise, cand = _world(200)
    with pytest.raises(ValueError, match="verdicts for"):
        simulate_auc_verdicts(cand, edges, noise, auc=0.7, seed=0,
                              decide=lambda s: (np.ones(len(s) + 1, bool), {}))


def test_one_class_gives_no_realised_auc():
    edges, noise, cand = _world(200)
    _, info = simulate_scores(cand, edges, np.zeros_like(noise), auc=0.7, seed=0)
    assert info["realised_auc"] is None and info["truly_noisy"] == 0


@pytest.mark.parametrize("extra,match", [
    ({"rater": "simulated", "simulated_auc": 0.4}, r"pipeline.simulated_auc must be in \[0.5, 1\]"),
    ({"rater": "simulated", "simulated_auc": 1.5}, r"pipeline.simulated_auc must be in \[0.5, 1\]"),
    ({"rater": "simulated", "simulated_auc": 0.8, "simulated_error": 0.1}, "set one"),
    ({"simulated_auc": 0.8}, "pipeline.rater"),
])
def test_pipeline_settings_check_the_auc(extra, match):
    from llmhni_local.stages.settings import PipelineSettings

    with pytest.raises(ConfigError, match=match) as info:
        PipelineSettings(**extra)
    assert "\n" not in str(info.value)
    assert PipelineSettings(rater="simulated", simulated_auc=1.0).simulated_auc == 1.0
    assert PipelineSettings().simulated_auc is None  # the error-rate form stays the default
