"""Training objectives: what one batch's loss is, given the model and the batch.

An objective owns the graph(s) it propagates over, so the trainer stays the same for plain
BPR, the denoising baselines (T-CE, R-CE), SGL and LLMHNI (``llmhni_local.llmhni``).

Graphs are built on the CPU (scipy, and the numpy generator's edge dropout, so seeded CPU
runs keep their figures) and ``to(device)`` moves them, as ``nn.Module.to`` does; the views
redrawn each epoch follow to the same device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from llmhni_local.core.config import TrainSettings
from llmhni_local.graph.adjacency import bipartite_adjacency
from llmhni_local.graph.dropout import dropout_edge
from llmhni_local.train import losses


@dataclass
class BatchLoss:
    """A batch's total loss and its named parts (floats, for the training curve)."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class RecObjective:
    """BPR and its loss-based denoising variants on one graph, with optional SGL contrast.

    Args:
        edges: ``(E, 2)`` training (user, item) pairs: the graph and the positives.
        n_users: number of users.
        n_items: number of items.
        settings: the ``[train]`` settings (loss kind, L2, T-CE / R-CE / SGL knobs).
    """

    def __init__(self, edges: np.ndarray, n_users: int, n_items: int, settings: TrainSettings) -> None:
        self.edges, self.n_users, self.n_items, self.settings = edges, n_users, n_items, settings
        self.adj = bipartite_adjacency(edges, n_users, n_items)
        self.views: tuple[torch.Tensor, torch.Tensor] | None = None
        self.epoch = 1
        self.device = torch.device("cpu")

    @property
    def positives(self) -> np.ndarray:
        return self.edges

    def parameters(self) -> list[torch.nn.Parameter]:
        """Weights of the objective's own that the trainer's optimiser updates: none here."""
        return []

    def to(self, device: torch.device | str) -> RecObjective:
        """Move the graph (and this epoch's views) to ``device``; later views follow."""
        self.device = torch.device(device)
        self.adj = self.adj.to(self.device)
        if self.views is not None:
            self.views = tuple(v.to(self.device) for v in self.views)  # type: ignore[assignment]
        return self

    def start_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        self.epoch = epoch
        if self.settings.loss == "sgl":  # SGL-ED: two edge-dropped views per epoch
            self.views = tuple(  # type: ignore[assignment]
                bipartite_adjacency(dropout_edge(self.edges, self.settings.edge_drop, rng)[0],
                                    self.n_users, self.n_items).to(self.device)
                for _ in range(2))

    def eval_adj(self) -> torch.Tensor:
        return self.adj

    def choose_negatives(self, users: torch.Tensor, neg: torch.Tensor, user_emb: torch.Tensor,
                         item_emb: torch.Tensor) -> torch.Tensor:
        """The ``(B,)`` negatives the loss uses, given what the sampler drew: here the draw
        itself; a sampler of pools leaves the choice to a subclass (DNS takes the pool's
        highest-scoring item, :mod:`llmhni_local.baselines.dns`)."""
        return neg

    def __call__(self, model, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> BatchLoss:
        s = self.settings
        u_emb, i_emb = model(self.adj)
        neg = self.choose_negatives(users, neg, u_emb, i_emb)
        eu = u_emb[users]
        s_pos = (eu * i_emb[pos]).sum(-1)
        s_neg = (eu * i_emb[neg]).sum(-1)
        parts: dict[str, float] = {}
        if s.loss == "tce":
            rate = losses.tce_drop_rate(self.epoch, s.tce_max_drop, s.tce_warmup)
            rec, _ = losses.truncated(s_pos, s_neg, rate)
            parts["drop_rate"] = rate
        elif s.loss == "rce":
            rec = losses.reweighted(s_pos, s_neg, s.rce_alpha)
        else:
            rec = losses.bpr(s_pos, s_neg).mean()
        e_u, e_i = model.ego(users, pos)
        _, e_j = model.ego(users, neg)
        reg = s.l2 * losses.l2_penalty(e_u, e_i, e_j)
        total = rec + reg
        parts["rec"] = float(rec.detach())
        parts["l2"] = float(reg.detach())
        if s.loss == "sgl" and self.views is not None:
            u1, i1 = model(self.views[0])
            u2, i2 = model(self.views[1])
            uu, ii = torch.unique(users), torch.unique(pos)
            ssl = losses.info_nce(u1[uu], u2[uu], s.ssl_temp) + losses.info_nce(i1[ii], i2[ii], s.ssl_temp)
            total = total + losses.warmup_scale(self.epoch, s.ssl_warmup) * s.ssl_weight * ssl
            parts["ssl"] = float(ssl.detach())
        return BatchLoss(total, parts)
