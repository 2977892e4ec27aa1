import json

import numpy as np
import pytest

from llmhni_local.core.config import TrainConfig, load_config
from llmhni_local.train.run import load_trained, train_run
from llmhni_local.train.trainer import evaluate_model


@pytest.fixture(scope="module")
def ml100k():
    pytest.importorskip("pandas")
    from llmhni_local.data.movielens import load_ml100k

    try:
        return load_ml100k()
    except Exception as exc:  # package missing on a bare machine
        pytest.skip(f"MovieLens-100K unavailable: {exc}")


def test_short_training_clearly_beats_random(ml100k, tmp_path):
    cfg = load_config(TrainConfig, None, {"train.epochs": 12, "train.eval_every": 4,
                                          "model.dim": 32, "train.batch_size": 4096,
                                          "train.lr": 5e-3})
    result = train_run(cfg, ml100k, tmp_path, progress=False)
    # a random ranking finds about 20 / n_items of a user's test items
    random_recall = 20 / ml100k.n_items
    assert result.test["recall@20"] > 5 * random_recall
    assert result.best_epoch in (4, 8, 12)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["test"]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert metrics["best_epoch"] == result.best_epoch
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seeds"]["train"] == 0 and "torch" in manifest["versions"]
    assert manifest["data_sources"] and "commit" in manifest["git"]
    # the saved checkpoint is the best one and reproduces the test metrics
    model = load_trained(tmp_path, ml100k)
    from llmhni_local.graph.adjacency import bipartite_adjacency

    adj = bipartite_adjacency(ml100k.train, ml100k.n_users, ml100k.n_items)
    again = evaluate_model(model, adj, ml100k, "test", cfg.eval)
    assert again == pytest.approx(result.test)


def test_same_seed_same_result(ml100k, tmp_path):
    from llmhni_local.data import first_users

    small = first_users(ml100k, 200)
    cfg = load_config(TrainConfig, None, {"train.epochs": 2, "train.eval_every": 1,
                                          "model.dim": 16, "train.loss": "sgl"})
    a = train_run(cfg, small, tmp_path / "a", progress=False)
    b = train_run(cfg, small, tmp_path / "b", progress=False)
    assert a.test == pytest.approx(b.test, abs=1e-9)
    # multithreaded sparse kernels may sum in another order: equal up to float rounding
    assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history], rel=1e-6)


@pytest.mark.parametrize("loss", ["tce", "rce", "sgl"])
@pytest.mark.parametrize("model", ["lightgcn", "ngcf"])
def test_every_loss_and_backbone_trains(ml100k, tmp_path, loss, model):
    from llmhni_local.data import first_users

    small = first_users(ml100k, 100)
    cfg = load_config(TrainConfig, None, {"train.epochs": 2, "train.eval_every": 1,
                                          "model.dim": 8, "model.name": model, "train.loss": loss})
    r = train_run(cfg, small, tmp_path, progress=False)
    assert np.isfinite(r.history[-1]["loss"])
    # better than ranking at random, whose expected Recall@20 is 20 / items
    assert r.test["recall@20"] > 20 / small.n_items
