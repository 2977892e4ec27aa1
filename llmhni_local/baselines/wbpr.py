"""WBPR: BPR with negatives drawn by popularity.

Gantner, Drumond, Freudenthaler and Schmidt-Thieme, "Personalized Ranking for Non-Uniformly
Sampled Items", JMLR W&CP 18 (KDD Cup 2011), 2012. In the KDD Cup's test sets the negatives
were drawn in proportion to item popularity; the paper weights BPR's pairs by the negative
item's popularity, which in a sampling trainer is the same thing as drawing the negative with
probability proportional to its number of positive interactions. ``exponent`` generalises the
weight to ``count ** exponent`` (1 is the paper's; word2vec's 0.75 is a common softer choice);
the popularity counts are the training pairs' (the data the model learns from, noise included).
An item with no training interaction is never drawn as a negative (its weight is 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmhni_local.core.errors import ConfigError
from llmhni_local.train.samplers import UniformNegatives


@dataclass(frozen=True)
class WBPRSettings:
    """WBPR's one knob.

    Args:
        exponent: negatives are drawn with probability proportional to
            ``train_count(item) ** exponent``; 1 is Gantner et al.'s weighting, 0 is uniform
            over the items seen in training. (default: ``1.0``)
    """

    exponent: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.exponent <= 2.0:
            raise ConfigError(f"baselines.wbpr.exponent must be in [0, 2], got {self.exponent}")


#: Chosen on validation Recall@20: the paper's weighting (1) and two softer ones.
GRID: dict[str, tuple] = {"exponent": (0.5, 0.75, 1.0)}


class PopularityNegatives:
    """Negatives drawn by popularity, never a positive of their user (rejection sampling).

    Args:
        positives: ``(E, 2)`` (user, item) pairs never returned.
        counts: ``(I,)`` each item's popularity (its number of training interactions).
        exponent: the draw's probabilities are proportional to ``counts ** exponent``.

    Example:
        >>> s = PopularityNegatives(np.array([[0, 0]]), np.array([5, 0, 1]), 1.0)
        >>> sorted(set(s.sample(np.zeros(200, dtype=np.int64), np.random.default_rng(0)).tolist()))
        [2]
    """

    def __init__(self, positives: np.ndarray, counts: np.ndarray, exponent: float) -> None:
        weight = np.asarray(counts, dtype=np.float64) ** exponent
        weight[np.asarray(counts) <= 0] = 0.0
        if weight.sum() <= 0:
            raise ValueError("no item has a training interaction to draw negatives from")
        self.cdf = np.cumsum(weight / weight.sum())
        self.n_items = len(weight)
        self._positive = UniformNegatives(positives, self.n_items)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # searchsorted on the cdf: one uniform number per draw, as fast as the uniform sampler
        return np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), self.n_items - 1)

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(len(users),)`` negatives."""
        items = self.draw(len(users), rng)
        bad = self._positive.is_positive(users, items)
        for _ in range(200):
            if not bad.any():
                return items
            items[bad] = self.draw(int(bad.sum()), rng)
            bad[bad] = self._positive.is_positive(users[bad], items[bad])
        raise RuntimeError("could not draw popularity negatives: some user has every popular item")


def popularity_sampler(edges: np.ndarray, n_items: int,
                       settings: WBPRSettings) -> PopularityNegatives:
    """WBPR's sampler over the training pairs ``edges``."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    counts = np.bincount(edges[:, 1], minlength=n_items)
    return PopularityNegatives(edges, counts, settings.exponent)
