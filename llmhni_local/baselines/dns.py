"""DNS: dynamic negative sampling, the highest-scoring of a pool of uniform candidates.

Zhang, Chen, Wang and Yu, "Optimizing Top-N Collaborative Filtering via Dynamic Negative Item
Sampling", SIGIR 2013. For each positive pair the sampler draws ``pool`` uniform items the user
has no interaction with, and the current model's highest-scoring one is the negative (no
gradient through the choice). It is LLMHNI's semantic-guided sampler without the similarity
test (docs/METHOD.md stage 4), so the default pool is LLMHNI's ``llmhni.pool_size`` (10); a
table of LLMHNI against DNS separates what the text adds from what hard-negative mining does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llmhni_local.core.config import TrainSettings
from llmhni_local.core.errors import ConfigError
from llmhni_local.train.objectives import RecObjective
from llmhni_local.train.samplers import UniformNegatives


@dataclass(frozen=True)
class DNSSettings:
    """DNS's one knob.

    Args:
        pool: uniform candidates per positive pair, of which the highest-scoring is the
            negative; 1 is plain uniform sampling. (default: ``10``)
    """

    pool: int = 10

    def __post_init__(self) -> None:
        if self.pool < 1:
            raise ConfigError(f"baselines.dns.pool must be >= 1, got {self.pool}")


#: Chosen on validation Recall@20: around LLMHNI's pool of 10 (Zhang et al. found gains up to
#: a few tens of candidates, with the hardest draws hurting as the pool grows).
GRID: dict[str, tuple] = {"pool": (5, 10, 20)}


class UniformPools:
    """``(B, pool)`` uniform candidates per pair, none a positive of its user."""

    def __init__(self, positives: np.ndarray, n_items: int, pool: int) -> None:
        self.pool = pool
        positives = np.asarray(positives, dtype=np.int64).reshape(-1, 2)
        self._uniform = UniformNegatives(positives, n_items)

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = self._uniform.sample(users, rng, n=self.pool)
        return np.asarray(out, dtype=np.int64).reshape(len(users), self.pool)


def hardest(users: torch.Tensor, pool: torch.Tensor, user_emb: torch.Tensor,
            item_emb: torch.Tensor) -> torch.Tensor:
    """Each row's highest-scoring candidate (ties: the first), chosen without gradient.

    Example:
        >>> u = torch.tensor([[1.0, 0.0]]); it = torch.tensor([[0.1, 0.0], [0.9, 0.0], [0.5, 0.0]])
        >>> hardest(torch.tensor([0]), torch.tensor([[0, 1, 2]]), u, it).tolist()
        [1]
    """
    with torch.no_grad():
        scores = (user_emb[users].unsqueeze(1) * item_emb[pool]).sum(-1)
    return pool.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)


class DNSObjective(RecObjective):
    """BPR on G with each pair's negative the hardest of its pool (:func:`hardest`).

    Args:
        edges: ``(E, 2)`` training pairs.
        n_users: number of users.
        n_items: number of items.
        settings: the ``[train]`` settings (BPR, L2).
        dns: the ``[baselines.dns]`` settings.

    Use :meth:`make_sampler` as the trainer's sampler.
    """

    def __init__(self, edges: np.ndarray, n_users: int, n_items: int, settings: TrainSettings,
                 dns: DNSSettings) -> None:
        super().__init__(edges, n_users, n_items, settings)
        self.dns = dns

    def make_sampler(self) -> UniformPools:
        return UniformPools(self.edges, self.n_items, self.dns.pool)

    def choose_negatives(self, users: torch.Tensor, neg: torch.Tensor, user_emb: torch.Tensor,
                         item_emb: torch.Tensor) -> torch.Tensor:
        return hardest(users, neg, user_emb, item_emb) if neg.ndim == 2 else neg
