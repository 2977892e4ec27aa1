import inspect
import json

import numpy as np
import pandas as pd
import pytest

from llmhni_local.errors import ConfigError, DataError
from llmhni_local.method.denoise import denoised_edges
from llmhni_local.method.simulated_rater import simulate_verdicts, write_simulated_verdicts

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
