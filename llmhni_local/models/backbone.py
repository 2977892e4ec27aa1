"""What the trainer needs of a backbone (:class:`Backbone`)."""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

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


@runtime_checkable
class LayeredBackbone(Backbone, Protocol):
    """A backbone whose layers can be read and perturbed one by one (SimGCL's and XSimGCL's
    noise goes between layers): :class:`~llmhni_local.models.LightGCN` and
    :class:`~llmhni_local.models.NGCF`.

    ``layer_embeddings(adj, perturb=None)`` returns ``[E^(0), ..., E^(L)]`` (each ``(U+I, d)``,
    ``perturb`` applied to each propagated layer before the next reads it) and
    ``combine(layers)`` the final ``(user, item)`` embeddings the forward pass returns.
    """

    def layer_embeddings(self, adj: torch.Tensor,
                         perturb: Callable[[torch.Tensor], torch.Tensor] | None = None
                         ) -> list[torch.Tensor]: ...

    def combine(self, layers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...
