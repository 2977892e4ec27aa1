"""NGCF (Wang et al., SIGIR 2019, https://arxiv.org/abs/1905.08108)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmhni_local.graph.adjacency import propagate


class NGCF(nn.Module):
    r"""Neural Graph Collaborative Filtering.

    .. math::
        E^{(l+1)} = \mathrm{LeakyReLU}\big((\hat{A} E^{(l)} + E^{(l)}) W_1^{(l)}
                    + (\hat{A} E^{(l)} \odot E^{(l)}) W_2^{(l)}\big)

    followed by message dropout and row normalisation; the final embedding concatenates all
    layers, so ``out_dim = dim * (layers + 1)``.

    Args:
        n_users: number of users.
        n_items: number of items.
        dim: embedding and layer size. (default in settings: ``64``)
        layers: propagation layers. (default in settings: ``3``)
        dropout: message dropout during training. (default in settings: ``0.1``)
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 3,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.n_users, self.n_items, self.layers, self.dropout = n_users, n_items, layers, dropout
        self.embedding = nn.Embedding(n_users + n_items, dim)
        nn.init.xavier_uniform_(self.embedding.weight)
        self.w1 = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.w2 = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    @property
    def out_dim(self) -> int:
        return self.embedding.embedding_dim * (self.layers + 1)

    def forward(self, adj: torch.Tensor,
                perturb: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(user, item)`` embeddings (``perturb``: see :meth:`layer_embeddings`)."""
        return self.combine(self.layer_embeddings(adj, perturb))

    def layer_embeddings(self, adj: torch.Tensor,
                         perturb: Callable[[torch.Tensor], torch.Tensor] | None = None
                         ) -> list[torch.Tensor]:
        """``[E^(0), ..., E^(L)]``, each ``(U+I, dim)``: layer 0 as it is, the others row
        normalised as the concatenation reads them. ``perturb``, when given, maps each layer's
        output (after message dropout, before normalising) to the one the next layer reads."""
        x = self.embedding.weight
        outs = [x]
        for w1, w2 in zip(self.w1, self.w2):
            side = propagate(adj, x)
            x = F.leaky_relu(w1(side + x) + w2(side * x), negative_slope=0.2)
            x = F.dropout(x, p=self.dropout, training=self.training)
            if perturb is not None:
                x = perturb(x)
            outs.append(F.normalize(x, dim=1))
        return outs

    def combine(self, layers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The layers concatenated, split into ``(user, item)``."""
        out = torch.cat(layers, dim=1)
        return out[: self.n_users], out[self.n_users:]

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.embedding.weight
        return w[users], w[self.n_users + items]
