"""Full-ranking evaluation in chunks of users: the same metrics whatever the chunk, and on
whatever device the embeddings are."""

import numpy as np
import pytest
import torch

from llmhni_local.eval.metrics import ranking_metrics
from llmhni_local.eval.ranking import chunk_users, evaluate_ranking

N_USERS, N_ITEMS = 37, 90


def _case(seed=0):
    rng = np.random.default_rng(seed)
    u = torch.from_numpy(rng.normal(size=(N_USERS, 8)).astype(np.float32))
    i = torch.from_numpy(rng.normal(size=(N_ITEMS, 8)).astype(np.float32))
    pairs = np.unique(np.stack([rng.integers(0, N_USERS, 900), rng.integers(0, N_ITEMS, 900)], 1),
                      axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    train, val, test = pairs[:500], pairs[500:600], pairs[600:]
    test = test[test[:, 0] < 30]  # users 30.. have no test item and are left out
    return u, i, train, val, test


def _reference(u, i, truth, masked, ks):
    """The definition, without chunks: every score, masked cells at -inf, a full sort."""
    scores = (u @ i.T).numpy().astype(np.float64)
    for m in masked:
        scores[m[:, 0], m[:, 1]] = -np.inf
    users = np.unique(truth[:, 0])
    truth_mask = np.zeros(scores.shape, bool)
    truth_mask[truth[:, 0], truth[:, 1]] = True
    order = np.argsort(-scores[users], axis=1, kind="stable")[:, : max(ks)]
    hits = np.take_along_axis(truth_mask[users], order, axis=1)
    return users, ranking_metrics(hits, truth_mask[users].sum(1), ks)


def test_chunk_size_bounds_the_scores_held():
    assert chunk_users(1024, 1682) == 1024
    assert chunk_users(1024, 10_000, max_scores=25_000) == 2
    assert chunk_users(1024, 10_000, max_scores=5) == 1  # never zero users
    assert chunk_users(3, 10) == 3


@pytest.mark.parametrize("batch_users,max_scores", [(1, 10**9), (4, 10**9), (1024, 10**9),
                                                    (1024, 3 * N_ITEMS), (1024, 1)])
def test_chunked_equals_unchunked_and_the_definition(batch_users, max_scores):
    u, i, train, val, test = _case()
    ks = (5, 10, 20)
    whole: dict = {}
    ref = evaluate_ranking(u, i, test, [train, val], ks=ks, batch_users=10**6, per_user=whole)
    part: dict = {}
    got = evaluate_ranking(u, i, test, [train, val], ks=ks, batch_users=batch_users,
                           max_scores=max_scores, per_user=part)
    # each user's masked ranking is the same in any chunk: per-user values agree exactly
    assert part.keys() == whole.keys()
    for key, values in whole.items():
        assert np.array_equal(part[key], values), key
    assert got == pytest.approx(ref, rel=1e-12)  # the means differ at most in summation order
    users, expected = _reference(u, i, test, [train, val], ks)
    assert np.array_equal(part["users"], users) and len(users) == 30
    for key, values in expected.items():
        assert part[key] == pytest.approx(values, abs=1e-12), key


def test_masked_items_never_count_even_in_one_user_chunks():
    # user 0's best items are all masked; its truth item is the best unmasked one
    u = torch.tensor([[1.0], [1.0]])
    i = torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]])
    train = np.array([[0, 0], [0, 1], [1, 0]])
    val = np.array([[0, 2]])
    test = np.array([[0, 3], [1, 2]])
    for max_scores in (1, 10**6):
        m = evaluate_ranking(u, i, test, [train, val], ks=(1,), max_scores=max_scores)
        assert m["recall@1"] == 0.5  # user 0 hits item 3 at rank 1; user 1 ranks item 1 first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_embeddings_give_the_cpu_metrics():
    u, i, train, val, test = _case(1)
    cpu: dict = {}
    gpu: dict = {}
    a = evaluate_ranking(u, i, test, [train, val], ks=(5, 10), per_user=cpu)
    b = evaluate_ranking(u.cuda(), i.cuda(), test, [train, val], ks=(5, 10), max_scores=4 * N_ITEMS,
                         per_user=gpu)
    assert b == pytest.approx(a, abs=1e-9)
    assert np.array_equal(cpu["users"], gpu["users"])


def test_score_percentiles_match_a_direct_count_whatever_the_chunk():
    from llmhni_local.eval.ranking import score_percentiles

    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(7, 4, generator=g), torch.randn(11, 4, generator=g)
    items[3] = items[5]  # a tie
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, 7, 40), rng.integers(0, 11, 40)], 1)
    scores = (users @ items.T).numpy()
    want = [((scores[u] < scores[u, i]).sum() + 0.5 * ((scores[u] == scores[u, i]).sum() - 1)) / 10
            for u, i in pairs]
    for batch in (1, 3, 1024):
        got = score_percentiles(users, items, pairs, batch_users=batch)
        np.testing.assert_allclose(got, want)
    # a random item averages one half; the user's own best item is at 1
    allp = np.array([[u, i] for u in range(7) for i in range(11)])
    assert score_percentiles(users, items, allp).mean() == pytest.approx(0.5)
    best = np.stack([np.arange(7), scores.argmax(1)], 1)
    assert (score_percentiles(users, items, best) == 1.0).all()
