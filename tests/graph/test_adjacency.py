import numpy as np
import pytest
import torch

from llmhni_local.graph.adjacency import (
    bipartite_adjacency,
    bipartite_edge_index,
    normalized_adjacency,
    propagate,
)


def test_normalised_adjacency_by_hand():
    # users 0,1; items 0,1; edges u0-i0, u0-i1, u1-i1
    edges = np.array([[0, 0], [0, 1], [1, 1]])
    a = bipartite_adjacency(edges, 2, 2).to_dense()
    deg = {0: 2, 1: 1, 2: 1, 3: 2}  # nodes: u0, u1, i0 (=2), i1 (=3)
    assert a[0, 2].item() == pytest.approx(1 / np.sqrt(deg[0] * deg[2]))
    assert a[0, 3].item() == pytest.approx(1 / np.sqrt(deg[0] * deg[3]))
    assert a[1, 3].item() == pytest.approx(1 / np.sqrt(deg[1] * deg[3]))
    assert a[1, 2].item() == 0.0
    assert torch.allclose(a, a.T)


def test_edge_weights_change_normalisation():
    edges = np.array([[0, 0], [0, 1]])
    a = bipartite_adjacency(edges, 1, 2, weight=np.array([1.0, 0.0])).to_dense()
    # nodes: user 0, item 0 (=1), item 1 (=2); the zero-weight edge vanishes
    assert a[0, 1].item() == pytest.approx(1.0) and a[0, 2].item() == 0.0


def test_propagate_gradient_matches_dense():
    edges = np.array([[0, 0], [0, 1], [1, 1], [2, 0]])
    adj = bipartite_adjacency(edges, 3, 2)
    x = torch.randn(5, 4, requires_grad=True)
    (propagate(adj, propagate(adj, x)) ** 2).sum().backward()
    g_sparse = x.grad.clone()
    x.grad = None
    dense = adj.to_dense()
    ((dense @ (dense @ x)) ** 2).sum().backward()
    assert torch.allclose(g_sparse, x.grad, atol=1e-5)


def scipy_reference(edges, n_users, n_items, weight=None):
    """The adjacency as the toolkit built it before PyG's utilities (scipy diagonal products)."""
    import scipy.sparse as sp

    n = n_users + n_items
    w = np.ones(len(edges), dtype=np.float32) if weight is None else np.asarray(weight, np.float32)
    rows = np.concatenate([edges[:, 0], edges[:, 1] + n_users])
    cols = np.concatenate([edges[:, 1] + n_users, edges[:, 0]])
    adj = sp.coo_matrix((np.concatenate([w, w]), (rows, cols)), shape=(n, n)).tocsr()
    adj.sum_duplicates()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    adj = (sp.diags(inv) @ adj @ sp.diags(inv)).tocsr()
    adj.sort_indices()
    return adj


def random_edges(seed, n_users=40, n_items=60, n=300):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n_users, n), rng.integers(0, n_items, n)], 1)  # with repeats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_csr_as_before(seed):
    edges = random_edges(seed)
    ref = scipy_reference(edges, 40, 70)  # 10 items without edges
    a = bipartite_adjacency(edges, 40, 70)
    assert a.layout == torch.sparse_csr and a.values().dtype == torch.float32
    assert a.crow_indices().tolist() == ref.indptr.tolist()
    assert a.col_indices().tolist() == ref.indices.tolist()
    assert torch.equal(a.values(), torch.from_numpy(ref.data.astype(np.float32)))  # bit for bit


def test_weighted_csr_as_before_to_rounding():
    edges = random_edges(3)
    w = np.random.default_rng(3).random(len(edges))
    ref = scipy_reference(edges, 40, 60, w)
    a = bipartite_adjacency(edges, 40, 60, weight=w)
    assert a.col_indices().tolist() == ref.indices.tolist()
    assert torch.allclose(a.values(), torch.from_numpy(ref.data.astype(np.float32)), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_pyg_edge_index_gives_the_same_adjacency(seed):
    edges = random_edges(seed)
    edge_index, w = bipartite_edge_index(edges, 40)
    assert edge_index.shape[0] == 2 and w.dtype == torch.float32
    # undirected: every (a, b) has its (b, a), with the same weight
    fwd = {(a, b): x for (a, b), x in zip(edge_index.T.tolist(), w.tolist())}
    assert all(fwd[(b, a)] == x for (a, b), x in fwd.items())
    assert w.sum().item() == 2 * len(edges)  # duplicates summed, none lost
    a = bipartite_adjacency(edges, 40, 60)
    shuffled = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(seed))
    b = normalized_adjacency(edge_index[:, shuffled], w[shuffled], 100)  # coalesced by PyG
    assert torch.equal(a.crow_indices(), b.crow_indices())
    assert torch.equal(a.col_indices(), b.col_indices())
    assert torch.allclose(a.values(), b.values(), rtol=1e-6)


def test_rows_of_normalised_adjacency_have_the_right_mass():
    # for D^-1/2 A D^-1/2: sum_j a_ij * sqrt(d_j) = sqrt(d_i)
    edges = np.unique(random_edges(5), axis=0)
    a = bipartite_adjacency(edges, 40, 60).to_dense()
    deg = (a != 0).sum(1).float()
    assert torch.allclose(a @ deg.sqrt(), deg.sqrt(), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_propagation_on_cuda_matches_the_cpu():
    rng = np.random.default_rng(0)
    edges = np.unique(np.stack([rng.integers(0, 20, 120), rng.integers(0, 30, 120)], 1), axis=0)
    adj = bipartite_adjacency(edges, 20, 30)
    x0 = torch.randn(50, 8)
    grads, outs = [], []
    for device in ("cpu", "cuda"):
        x = x0.to(device).requires_grad_()
        a = adj.to(device)
        assert a.layout == torch.sparse_csr and a.device.type == device
        y = propagate(a, propagate(a, x))
        (y ** 2).sum().backward()
        outs.append(y.detach().cpu())
        grads.append(x.grad.cpu())
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    # the CUDA graph is built like the CPU one: from a CUDA edge_index, on the same device
    ei, w = bipartite_edge_index(edges, 20)
    on_gpu = normalized_adjacency(ei.cuda(), w.cuda(), 50)
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.to_dense().cpu(), normalized_adjacency(ei, w, 50).to_dense())
