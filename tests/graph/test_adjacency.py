import numpy as np
import pytest
import torch

from llmhni_local.graph.adjacency import bipartite_adjacency, drop_edges, propagate


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


def test_drop_edges():
    edges = np.arange(2000).reshape(1000, 2)
    kept, mask = drop_edges(edges, 0.3, np.random.default_rng(0))
    assert np.array_equal(kept, edges[mask])
    assert 0.6 < mask.mean() < 0.8
    same, m2 = drop_edges(edges, 0.3, np.random.default_rng(0), training=False)
    assert same is edges and m2.all()
