import numpy as np
import pytest
import torch

from llmhni_local.graph.adjacency import bipartite_adjacency
from llmhni_local.models import NGCF, LightGCN, build_model


@pytest.fixture
def graph():
    rng = np.random.default_rng(0)
    edges = np.unique(np.stack([rng.integers(0, 6, 20), rng.integers(0, 9, 20)], 1), axis=0)
    return edges, bipartite_adjacency(edges, 6, 9)


def test_lightgcn_is_mean_of_layers(graph):
    _, adj = graph
    m = LightGCN(6, 9, dim=4, layers=2)
    e0 = m.embedding.weight.detach()
    dense = adj.to_dense()
    expected = (e0 + dense @ e0 + dense @ dense @ e0) / 3
    u, i = m(adj)
    assert torch.allclose(torch.cat([u, i]), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["lightgcn", "ngcf"])
@pytest.mark.parametrize("layers", [0, 1, 3])
def test_shapes_and_gradients(graph, name, layers):
    _, adj = graph
    m = build_model(name, 6, 9, dim=8, layers=layers)
    u, i = m(adj)
    assert u.shape == (6, m.out_dim) and i.shape == (9, m.out_dim)
    (u.sum() + i.sum()).backward()
    assert m.embedding.weight.grad is not None
    eu, ei = m.ego(torch.tensor([0, 5]), torch.tensor([8]))
    assert eu.shape == (2, 8) and ei.shape == (1, 8)


def test_ngcf_out_dim():
    assert NGCF(2, 2, dim=8, layers=3).out_dim == 32
