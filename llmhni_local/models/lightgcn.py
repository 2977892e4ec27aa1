"""LightGCN (He et al., SIGIR 2020, https://arxiv.org/abs/2002.02126)."""

from __future__ import annotations

import torch
from torch import nn

from llmhni_local.graph.adjacency import propagate


class LightGCN(nn.Module):
    r"""LightGCN: linear propagation, mean over layers.

    .. math::
        E^{(l+1)} = \hat{A} E^{(l)}, \qquad E = \frac{1}{L+1} \sum_{l=0}^{L} E^{(l)}

    Scores are inner products ``<e_u, e_i>`` of the final embeddings.

    Args:
        n_users: number of users.
        n_items: number of items.
        dim: embedding size. (default in settings: ``64``)
        layers: propagation layers ``L``. (default in settings: ``3``)
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.n_users, self.n_items, self.layers = n_users, n_items, layers
        self.embedding = nn.Embedding(n_users + n_items, dim)
        nn.init.xavier_uniform_(self.embedding.weight)

    @property
    def out_dim(self) -> int:
        return self.embedding.embedding_dim

    def forward(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(user, item)`` embeddings after propagating over ``adj``."""
        x = self.embedding.weight
        out = x
        for _ in range(self.layers):
            x = propagate(adj, x)
            out = out + x
        out = out / (self.layers + 1)
        return out[: self.n_users], out[self.n_users:]

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 embeddings of the given users and items (for the L2 penalty)."""
        w = self.embedding.weight
        return w[users], w[self.n_users + items]
