"""What the trainer needs of a backbone (:class:`Backbone`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Backbone(Protocol):
    """A graph recommender the trainer and every objective can train.

    ``forward(adj)`` takes the normalised ``(U+I, U+I)`` CSR adjacency an objective holds
    (:func:`llmhni_local.graph.adjacency.bipartite_adjacency`: users first, then items) and
    returns the final ``(user (U, d), item (I, d))`` embeddings; scores are inner products.
    ``ego(users, items)`` returns their layer-0 embeddings, which the L2 penalty reads.
    :class:`~llmhni_local.models.LightGCN`, :class:`~llmhni_local.models.NGCF` and
    :class:`~llmhni_local.models.pyg.PyGBackbone` (any PyG model) are backbones.
    """

    n_users: int
    n_items: int

    @property
    def out_dim(self) -> int: ...

    def __call__(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
