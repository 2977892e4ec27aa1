import numpy as np
import pytest
import scipy.sparse as sp

from llmhni_local.core.errors import DataError
from llmhni_local.llmhni.align import (
    batch_positive_mask,
    pseudo_labels,
    similarity_vectors,
    train_alignment,
)
from llmhni_local.llmhni.settings import AlignSettings, LLMHNISettings


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads; on a shared 2-core machine two threads made
    these tests ten times slower (intra-op threads waiting on each other)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _brute_pseudo(xu, xi, pairs, n):
    out = []
    for u in range(len(xu)):
        items = sorted({int(i) for uu, i in pairs if uu == u})
        cos = {i: float(xu[u] @ xi[i] / np.linalg.norm(xu[u]) / np.linalg.norm(xi[i])) for i in items}
        ranked = sorted(items, key=lambda i: (-cos[i], i))
        out.extend((u, i) for i in ranked[:n])
    return out


@pytest.mark.parametrize("n", [1, 3, 50])
def test_pseudo_labels_are_the_top_n_interacted_items_by_cosine(n):
    rng = np.random.default_rng(0)
    xu, xi = rng.normal(size=(6, 5)), rng.normal(size=(20, 5))
    pairs = np.stack([rng.integers(0, 5, 60), rng.integers(0, 20, 60)], 1)  # user 5: no pair
    pairs = np.concatenate([pairs, pairs[:7]])  # duplicates count once
    got = pseudo_labels(xu, xi, pairs, n)
    assert [tuple(p) for p in got.tolist()] == _brute_pseudo(xu, xi, pairs.tolist(), n)
    # only interacted items, never more than n per user
    keys = set(map(tuple, pairs.tolist()))
    assert all(tuple(p) in keys for p in got.tolist())
    assert np.bincount(got[:, 0], minlength=6).max() <= n


def test_pseudo_labels_ignore_scale_and_pick_by_cosine():
    xu = np.array([[1.0, 0.0]])
    xi = np.array([[10.0, 10.0], [1.0, 0.1], [0.0, 5.0]])  # cosines 0.707, 0.995, 0
    got = pseudo_labels(xu, xi, np.array([[0, 0], [0, 1], [0, 2]]), 2)
    assert got.tolist() == [[0, 1], [0, 0]]


def test_pseudo_labels_reject_out_of_range_pairs():
    with pytest.raises(DataError):
        pseudo_labels(np.ones((2, 3)), np.ones((2, 3)), np.array([[0, 2]]), 1)
    with pytest.raises(DataError):
        pseudo_labels(np.ones((2, 3)), np.ones((2, 4)), np.array([[0, 1]]), 1)


def test_batch_mask_hides_other_pseudo_positives_only():
    member = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0]]))
    users, items = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2])
    mask = batch_positive_mask(member, users, items)
    expected = np.array([[member[u, i] > 0 for i in items] for u in users])
    np.fill_diagonal(expected, False)
    assert (mask == expected).all()
    assert mask[0, 1] and mask[2, 1]  # same item twice / same user twice
    assert not mask[0, 3] and not mask.diagonal().any()


def _clustered(seed=0, n_users=60, n_items=120, d=16):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, d))
    topic = rng.integers(0, 4, n_items)
    xi = centers[topic] + 1.5 * rng.normal(size=(n_items, d))
    user_topic = rng.integers(0, 4, n_users)
    pairs = np.array([(u, i) for u in range(n_users)
                      for i in rng.choice(np.flatnonzero(topic == user_topic[u]), 8, replace=False)])
    xu = centers[user_topic] + 1.5 * rng.normal(size=(n_users, d))
    return xu.astype(np.float32), xi.astype(np.float32), pairs


def test_train_alignment_is_seeded_unit_and_learns():
    xu, xi, pairs = _clustered()
    s = AlignSettings(n_pseudo=5, hidden=32, out_dim=8, epochs=15, batch_size=64, lr=5e-3)
    zu, zi, hist = train_alignment(xu, xi, pairs, s, seed=3)
    assert zu.shape == (60, 8) and zi.shape == (120, 8) and zu.dtype == np.float32
    assert np.allclose(np.linalg.norm(zu, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(zi, axis=1), 1, atol=1e-5)
    assert len(hist) == 15 and hist[-1]["loss"] < hist[0]["loss"]
    assert hist[-1]["pos_cos"] > hist[-1]["rand_cos"] + 0.2
    zu2, zi2, _ = train_alignment(xu, xi, pairs, s, seed=3)
    assert np.array_equal(zu, zu2) and np.array_equal(zi, zi2)
    zu3, _, _ = train_alignment(xu, xi, pairs, s, seed=4)
    assert not np.array_equal(zu, zu3)
    # LLMHNISettings is accepted (its align table is read)
    zu4, _, _ = train_alignment(xu, xi, pairs, LLMHNISettings(align=s), seed=3)
    assert np.array_equal(zu, zu4)


def test_train_alignment_leaves_torch_global_rng_alone():
    import torch

    xu, xi, pairs = _clustered()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_alignment(xu, xi, pairs, AlignSettings(epochs=1, hidden=8, out_dim=4), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_same_seed_same_vectors_whatever_the_thread_count():
    """Two threads split the weight gradient's sum over the batch in a way that can change
    with the machine's load; the alignment trains on one, so the vectors repeat bit for bit
    and the caller's thread count is restored."""
    import torch

    rng = np.random.default_rng(0)
    xu = rng.normal(size=(200, 128)).astype(np.float32)
    xi = rng.normal(size=(300, 128)).astype(np.float32)
    pairs = np.stack([rng.integers(0, 200, 4000), rng.integers(0, 300, 4000)], 1)
    s = AlignSettings(hidden=256, out_dim=64, epochs=2, batch_size=1024)
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[threads] = train_alignment(xu, xi, pairs, s, seed=0)[:2]
        assert torch.get_num_threads() == threads
    assert np.array_equal(out[1][0], out[2][0]) and np.array_equal(out[1][1], out[2][1])


def test_similarity_vectors_without_alignment_are_the_raw_embeddings():
    xu, xi, pairs = _clustered()
    vu, vi, hist = similarity_vectors(xu, xi, pairs, LLMHNISettings(alignment=False), seed=0)
    assert hist == []
    assert np.allclose(vu, xu / np.linalg.norm(xu, axis=1, keepdims=True), atol=1e-6)
    assert np.allclose(vi, xi / np.linalg.norm(xi, axis=1, keepdims=True), atol=1e-6)
    s = LLMHNISettings(align=AlignSettings(epochs=1, hidden=8, out_dim=4))
    vu, vi, hist = similarity_vectors(xu, xi, pairs, s, seed=0)
    assert vu.shape == (60, 4) and len(hist) == 1
