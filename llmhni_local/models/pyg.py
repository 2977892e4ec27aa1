"""Any PyTorch Geometric model as a backbone of the toolkit's trainer.

:class:`PyGBackbone` turns the normalised CSR adjacency an objective holds into what a PyG
module takes, a COO ``edge_index`` with ``edge_weight`` (or, with ``sparse=True``, the CSR
tensor itself, which PyG's convs accept in place of ``edge_index``), and splits the node
embeddings it returns into users and items. The weights are already ``D^{-1/2} A D^{-1/2}``,
so convolutions must not normalise again (``normalize=False`` for ``LGConv`` / ``GCNConv``).
The toolkit's own LightGCN and NGCF stay on their CSR propagation, which is faster
(docs/BENCHMARKS.md, "PyG backbones"; docs/DESIGN.md, "What we use from PyG").
"""

from __future__ import annotations

import torch
from torch import nn


class PyGBackbone(nn.Module):
    """A PyG module wrapped to the :class:`~llmhni_local.models.backbone.Backbone` interface.

    Args:
        module: either a recommender with its own ``embedding`` table over the ``U+I`` nodes,
            called as ``module.get_embedding(edge_index, edge_weight)`` (PyG's ``LightGCN``)
            or ``module(edge_index, edge_weight)``; or, when ``dim`` is given, a stack of
            convolutions called as ``module(x, edge_index, edge_weight)`` on embeddings this
            wrapper learns (e.g. ``torch_geometric.nn.models.GCN``).
        n_users: number of users.
        n_items: number of items.
        dim: size of the learnt input embeddings of a conv stack; None when ``module`` has
            its own ``embedding``. (default: ``None``)
        out_dim: size of the module's output; None when it equals the input size.
            (default: ``None``)
        sparse: pass the CSR adjacency itself instead of a COO ``edge_index``. (default:
            ``False``)
    """

    def __init__(self, module: nn.Module, n_users: int, n_items: int, *, dim: int | None = None,
                 out_dim: int | None = None, sparse: bool = False) -> None:
        super().__init__()
        self.module, self.n_users, self.n_items, self.sparse = module, n_users, n_items, sparse
        if dim is not None:
            self.embedding = nn.Embedding(n_users + n_items, dim)
            nn.init.xavier_uniform_(self.embedding.weight)
        elif not isinstance(getattr(module, "embedding", None), nn.Embedding):
            raise ValueError(f"{type(module).__name__} has no `embedding` table: pass dim= to "
                             "learn input embeddings for it")
        table = self.embedding if dim is not None else module.embedding
        if table.num_embeddings != n_users + n_items:
            raise ValueError(f"embedding table has {table.num_embeddings} rows, the graph "
                             f"{n_users} users + {n_items} items")
        self._out_dim = out_dim or table.embedding_dim
        self._graphs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def table(self) -> nn.Embedding:
        """The layer-0 embeddings (the wrapper's, or the module's own)."""
        return self.embedding if hasattr(self, "embedding") else self.module.embedding

    @property
    def out_dim(self) -> int:
        return self._out_dim

    def coo(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(edge_index, edge_weight)`` of ``adj``, converted once per adjacency object.

        An objective keeps its graphs for many batches (views for an epoch), so the last few
        conversions are kept, keyed by the tensor itself.
        """
        from torch_geometric.utils import to_edge_index

        for held, edge_index, weight in self._graphs:
            if held is adj:
                return edge_index, weight
        edge_index, weight = to_edge_index(adj)
        self._graphs = [*self._graphs[-3:], (adj, edge_index, weight)]
        return edge_index, weight

    def forward(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(user, item)`` embeddings of the wrapped module over ``adj``."""
        graph, weight = (adj, None) if self.sparse else self.coo(adj)
        if hasattr(self, "embedding"):
            out = self.module(self.embedding.weight, graph, weight)
        elif hasattr(self.module, "get_embedding"):
            out = self.module.get_embedding(graph, weight)
        else:
            out = self.module(graph, weight)
        return out[: self.n_users], out[self.n_users:]

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 embeddings of the given users and items (for the L2 penalty)."""
        w = self.table.weight
        return w[users], w[self.n_users + items]


def pyg_lightgcn(n_users: int, n_items: int, dim: int = 64, layers: int = 3, *,
                 sparse: bool = False) -> PyGBackbone:
    """``torch_geometric.nn.models.LightGCN`` as a backbone (mean over layers, no
    re-normalisation of the toolkit's already normalised weights).

    Args:
        n_users: number of users.
        n_items: number of items.
        dim: embedding size. (default: ``64``)
        layers: propagation layers. (default: ``3``)
        sparse: propagate over the CSR adjacency instead of a COO ``edge_index``.
            (default: ``False``)
    """
    from torch_geometric.nn.models import LightGCN

    model = LightGCN(n_users + n_items, dim, layers, normalize=False)
    return PyGBackbone(model, n_users, n_items, sparse=sparse)
