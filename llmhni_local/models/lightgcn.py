"""LightGCN (He et al., SIGIR 2020, https://arxiv.org/abs/2002.02126)."""

from __future__ import annotations

from typing import Callable

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

    def forward(self, adj: torch.Tensor,
                perturb: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(user, item)`` embeddings after propagating over ``adj`` (``perturb``: see
        :meth:`layer_embeddings`)."""
        return self.combine(self.layer_embeddings(adj, perturb))

    def layer_embeddings(self, adj: torch.Tensor,
                         perturb: Callable[[torch.Tensor], torch.Tensor] | None = None
                         ) -> list[torch.Tensor]:
        """``[E^(0), ..., E^(L)]``, each ``(U+I, d)``, users first. ``perturb``, when given,
        maps each propagated layer ``E^(l)`` (``l >= 1``) to the one the next layer
        propagates and the mean reads (SimGCL's and XSimGCL's noise)."""
        x = self.embedding.weight
        out = [x]
        for _ in range(self.layers):
            x = propagate(adj, x)
            if perturb is not None:
                x = perturb(x)
            out.append(x)
        return out

    def combine(self, layers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean of the layers, split into ``(user, item)``."""
        out = layers[0]
        for x in layers[1:]:  # summed in order, then divided: the figures of earlier runs
            out = out + x
        out = out / len(layers)
        return out[: self.n_users], out[self.n_users:]

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 embeddings of the given users and items (for the L2 penalty)."""
        w = self.embedding.weight
        return w[users], w[self.n_users + items]
