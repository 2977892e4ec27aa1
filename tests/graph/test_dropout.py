import numpy as np
import pytest
import torch

from llmhni_local.graph.adjacency import bipartite_edge_index
from llmhni_local.graph.dropout import dropout_edge


def edges_of(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return np.unique(np.stack([rng.integers(0, 50, n), rng.integers(0, 80, n)], 1), axis=0)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_views_as_before(p, seed):
    # a seeded run keeps its views: the mask is the generator's next E uniforms >= p
    edges = edges_of()
    kept, mask = dropout_edge(edges, p, np.random.default_rng(seed))
    expected = np.random.default_rng(seed).random(len(edges)) >= p
    assert np.array_equal(mask, expected) and np.array_equal(kept, edges[mask])
    assert abs(mask.mean() - (1 - p)) < 0.06


def test_no_op_when_not_training_or_p_zero():
    edges = edges_of()
    rng = np.random.default_rng(0)
    for out, mask in (dropout_edge(edges, 0.3, rng, training=False), dropout_edge(edges, 0.0, rng)):
        assert out is edges and mask.all()
    # nothing was drawn from the generator
    assert rng.random() == np.random.default_rng(0).random()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability(p):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropout_edge(edges_of(), p, np.random.default_rng(0))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_matches_pyg_dropout_edge_force_undirected(monkeypatch, p):
    # Given the same uniforms, PyG's dropout_edge(force_undirected=True) on the undirected
    # edge_index keeps exactly the edges we keep, in both directions.
    from torch_geometric.utils import dropout_edge as pyg_dropout_edge

    edges = edges_of()
    n_users = 50
    _, mask = dropout_edge(edges, p, np.random.default_rng(3))
    coins = np.random.default_rng(3).random(len(edges))
    # PyG draws one coin per directed edge and uses those of row < col (user -> item)
    directed = torch.tensor(np.concatenate([
        np.stack([edges[:, 0], edges[:, 1] + n_users]),
        np.stack([edges[:, 1] + n_users, edges[:, 0]])], 1))
    monkeypatch.setattr(torch, "rand", lambda n, device=None: torch.from_numpy(
        np.concatenate([coins, np.zeros(len(edges))]).astype(np.float32)))
    pyg_kept, _ = pyg_dropout_edge(directed, p, force_undirected=True)
    ours, _ = bipartite_edge_index(edges[mask], n_users)
    assert sorted(map(tuple, pyg_kept.T.tolist())) == sorted(map(tuple, ours.T.tolist()))
