import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

from llmhni_local.core.config import EvalSettings, TrainSettings  # noqa: E402
from llmhni_local.data.dataset import Interactions  # noqa: E402
from llmhni_local.graph.adjacency import bipartite_adjacency  # noqa: E402
from llmhni_local.models import NGCF, Backbone, LightGCN, PyGBackbone, pyg_lightgcn  # noqa: E402


@pytest.fixture
def graph():
    rng = np.random.default_rng(0)
    edges = np.unique(np.stack([rng.integers(0, 6, 20), rng.integers(0, 9, 20)], 1), axis=0)
    return edges, bipartite_adjacency(edges, 6, 9)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("layers", [0, 1, 3])
def test_pyg_lightgcn_gives_our_embeddings(graph, sparse, layers):
    _, adj = graph
    ours = LightGCN(6, 9, dim=8, layers=layers)
    pyg = pyg_lightgcn(6, 9, dim=8, layers=layers, sparse=sparse)
    with torch.no_grad():
        pyg.table.weight.copy_(ours.embedding.weight)
    for a, b in zip(ours(adj), pyg(adj)):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)
    users, items = torch.tensor([0, 5]), torch.tensor([1, 8])
    for a, b in zip(ours.ego(users, items), pyg.ego(users, items)):
        assert torch.equal(a, b)


def test_backbones_meet_the_interface():
    from torch_geometric.nn.models import GCN

    for m in (LightGCN(2, 3, 4, 1), NGCF(2, 3, 4, 1), pyg_lightgcn(2, 3, 4, 1),
              PyGBackbone(GCN(4, 4, 2, normalize=False), 2, 3, dim=4)):
        assert isinstance(m, Backbone)


def test_conv_stack_with_learnt_inputs_trains(graph):
    from torch_geometric.nn.models import GCN

    _, adj = graph
    m = PyGBackbone(GCN(8, 16, num_layers=2, out_channels=8, normalize=False), 6, 9, dim=8)
    u, i = m(adj)
    assert u.shape == (6, 8) and i.shape == (9, 8) and m.out_dim == 8
    (u.sum() + i.sum()).backward()
    assert m.embedding.weight.grad is not None and m.embedding.weight.grad.abs().sum() > 0


def test_conversion_kept_per_adjacency(graph):
    edges, adj = graph
    m = pyg_lightgcn(6, 9, dim=4, layers=1)
    first = m.coo(adj)
    assert m.coo(adj)[0] is first[0]  # converted once
    other = bipartite_adjacency(edges[:-1], 6, 9)
    assert m.coo(other)[0].shape[1] == first[0].shape[1] - 2


def test_module_without_embedding_needs_dim():
    from torch_geometric.nn.models import GCN

    with pytest.raises(ValueError, match="dim="):
        PyGBackbone(GCN(4, 4, 2), 2, 3)
    with pytest.raises(ValueError, match="rows"):
        PyGBackbone(pyg_lightgcn(2, 3, 4, 1).module, 2, 4)  # 5 rows for 6 nodes


def planted_data(n_users=60, n_items=40, seed=0) -> Interactions:
    """Two blocks of users, each liking its own half of the items: easy to learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        half = np.arange(n_items // 2) + (n_items // 2 if u % 2 else 0)
        rows += [(u, i) for i in rng.choice(half, 10, replace=False)]
    pairs = np.array(rows, dtype=np.int64).reshape(n_users, 10, 2)
    return Interactions(name="planted", train=pairs[:, :6].reshape(-1, 2), val=pairs[:, 6:8].reshape(-1, 2),
                        test=pairs[:, 8:].reshape(-1, 2), n_users=n_users, n_items=n_items)


def test_trainer_trains_pyg_lightgcn():
    from llmhni_local.train.objectives import RecObjective
    from llmhni_local.train.trainer import fit

    data = planted_data()
    torch.manual_seed(0)
    model = pyg_lightgcn(data.n_users, data.n_items, dim=16, layers=2)
    train = TrainSettings(epochs=20, batch_size=128, lr=2e-2, eval_every=10, min_epochs=0)
    ev = EvalSettings(ks=(10,))
    result = fit(model, data, RecObjective(data.train, data.n_users, data.n_items, train),
                 train=train, eval=ev, progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    # a random ranking of the 34 unseen items finds about 10 / 34 of the test items
    assert result.test["recall@10"] > 2 * 10 / 34
