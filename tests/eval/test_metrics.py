import math

import numpy as np
import pytest
import torch

from llmhni_local.eval.metrics import precision_recall_f1, ranking_metrics
from llmhni_local.eval.ranking import evaluate_ranking


def test_recall_ndcg_hand_computed():
    # user 0: truth {a, b, c}; ranked hits at positions 1 and 3 (0-based 0 and 2)
    # user 1: truth {x}; hit at position 2 (0-based 1)
    hits = np.array([[True, False, True, False], [False, True, False, False]])
    n_truth = np.array([3, 1])
    m = ranking_metrics(hits, n_truth, ks=(1, 2, 4))
    assert m["recall@1"].tolist() == pytest.approx([1 / 3, 0.0])
    assert m["recall@2"].tolist() == pytest.approx([1 / 3, 1.0])
    assert m["recall@4"].tolist() == pytest.approx([2 / 3, 1.0])
    d = lambda r: 1 / math.log2(r + 1)  # rank r is 1-based
    # ideal DCG uses min(K, |T|) positions
    assert m["ndcg@1"][0] == pytest.approx(1.0)
    assert m["ndcg@2"][0] == pytest.approx(d(1) / (d(1) + d(2)))
    assert m["ndcg@4"][0] == pytest.approx((d(1) + d(3)) / (d(1) + d(2) + d(3)))
    assert m["ndcg@2"][1] == pytest.approx(d(2) / d(1))
    assert m["ndcg@1"][1] == 0.0


def test_cutoff_longer_than_list_is_an_error():
    with pytest.raises(ValueError):
        ranking_metrics(np.zeros((1, 5), bool), np.array([1]), ks=(10,))


def test_evaluate_ranking_masks_training_items():
    # 1 user, 4 items; the best-scored item is a training item and must be skipped.
    user = torch.tensor([[1.0]])
    items = torch.tensor([[4.0], [3.0], [2.0], [1.0]])
    train = np.array([[0, 0]])
    test = np.array([[0, 1]])
    m = evaluate_ranking(user, items, test, [train], ks=(1,))
    assert m["recall@1"] == 1.0
    m_unmasked = evaluate_ranking(user, items, test, [], ks=(1,))
    assert m_unmasked["recall@1"] == 0.0


def test_evaluate_ranking_batches_agree_and_skip_users_without_truth():
    rng = np.random.default_rng(0)
    u = torch.from_numpy(rng.normal(size=(30, 8)).astype(np.float32))
    i = torch.from_numpy(rng.normal(size=(50, 8)).astype(np.float32))
    train = np.stack([rng.integers(0, 30, 200), rng.integers(0, 50, 200)], 1)
    test = np.stack([rng.integers(0, 20, 60), rng.integers(0, 50, 60)], 1)  # users 20..29 have none
    test = np.array([p for p in test if not ((train[:, 0] == p[0]) & (train[:, 1] == p[1])).any()])
    a = evaluate_ranking(u, i, test, [train], ks=(5, 10), batch_users=7)
    b = evaluate_ranking(u, i, test, [train], ks=(5, 10), batch_users=1000)
    assert a == pytest.approx(b)
    # brute force for recall@10
    scores = (u @ i.T).numpy()
    for uu, ii in train:
        scores[uu, ii] = -np.inf
    vals = []
    for uu in np.unique(test[:, 0]):
        truth = set(test[test[:, 0] == uu, 1])
        top = np.argsort(-scores[uu], kind="stable")[:10]
        vals.append(len(truth & set(top)) / len(truth))
    assert a["recall@10"] == pytest.approx(np.mean(vals))


def test_prf():
    r = precision_recall_f1(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    assert (r["precision"], r["recall"], r["f1"]) == (0.5, 0.5, 0.5)
