"""Semantic-guided hard negatives (docs/METHOD.md stage 4).

The sampler draws a pool of ``M`` uniform negatives per training pair
(:class:`SemanticNegatives`); inside the loss, the current model scores the pool and
:func:`select_negatives` takes the highest-scoring candidate whose similarity to the user is
low. Candidates that score higher than the chosen one were skipped for their similarity: they
are the potential false negatives, never used as negatives, and counted.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from llmhni_local.train.samplers import UniformNegatives


class SemanticNegatives:
    """Pools of uniform negatives for the semantic-guided choice.

    Args:
        positives: ``(E, 2)`` (user, item) pairs never returned (for LLMHNI: G and G'
            together, so neither a training item nor an added missing positive is a negative).
        n_items: number of items.
        pool_size: candidates per pair, M.

    Example:
        >>> s = SemanticNegatives(np.array([[0, 0], [0, 1]]), n_items=4, pool_size=3)
        >>> pool = s.sample(np.array([0, 0]), np.random.default_rng(0))
        >>> pool.shape, bool((pool >= 2).all())
        ((2, 3), True)
    """

    def __init__(self, positives: np.ndarray, n_items: int, pool_size: int) -> None:
        if pool_size <= 0:
            raise ValueError(f"pool_size must be > 0, got {pool_size}")
        self.pool_size = pool_size
        self.n_items = n_items
        self._uniform = UniformNegatives(np.asarray(positives, dtype=np.int64).reshape(-1, 2),
                                         n_items)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._uniform.is_positive(users, items)

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(len(users), pool_size)`` int64 candidates, none a positive of its user."""
        out = self._uniform.sample(users, rng, n=self.pool_size)
        return np.asarray(out, dtype=np.int64).reshape(len(users), self.pool_size)


class Selection(NamedTuple):
    """What :func:`select_negatives` chose.

    Attributes:
        chosen: ``(B,)`` index into each row's pool of the negative used.
        flagged: ``(B, M)`` potential false negatives: candidates scoring strictly higher than
            the chosen one (skipped for their similarity). Never includes the chosen one.
        fallback: ``(B,)`` rows where every candidate was high-similarity (threshold rule):
            the least similar candidate was taken.
    """

    chosen: "torch.Tensor"  # noqa: F821
    flagged: "torch.Tensor"  # noqa: F821
    fallback: "torch.Tensor"  # noqa: F821


def select_negatives(scores, sim, *, rule: Literal["threshold", "combined"],
                     threshold=None, beta: float | None = None) -> Selection:
    """Choose one negative per row of a candidate pool.

    * ``threshold``: among candidates with ``sim < threshold[row]``, the highest-scoring one
      (ties: the first). If none is below the threshold, the candidate with the lowest
      similarity (the least likely false negative), and the row is marked ``fallback``.
    * ``combined``: the candidate maximising ``scores - beta * sim`` (ties: the first).

    In both, the flagged candidates are those scoring strictly above the chosen one: under the
    threshold rule they are exactly the high-similarity candidates that plain score-based hard
    negative sampling would have preferred; under the combined rule they are those whose higher
    similarity outweighed their higher score.

    Args:
        scores: ``(B, M)`` model scores of the candidates (no gradient is taken).
        sim: ``(B, M)`` similarity of each candidate to its row's user.
        rule: ``threshold`` or ``combined``.
        threshold: ``(B,)`` per-row threshold (or a scalar), for the threshold rule.
        beta: similarity weight, for the combined rule.

    Returns:
        A :class:`Selection` of torch tensors.

    Example:
        >>> import torch
        >>> s = torch.tensor([[3.0, 2.0, 1.0]])
        >>> sim = torch.tensor([[0.9, 0.1, 0.0]])
        >>> sel = select_negatives(s, sim, rule="threshold", threshold=torch.tensor([0.5]))
        >>> sel.chosen.tolist(), sel.flagged.tolist()
        ([1], [[True, False, False]])
    """
    import torch

    scores = torch.as_tensor(scores).detach()
    dev = scores.device  # every tensor made here lives where the scores do (CPU or CUDA)
    sim = torch.as_tensor(sim, dtype=scores.dtype, device=dev).detach()
    if scores.ndim != 2 or scores.shape != sim.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and sim {tuple(sim.shape)} must be the "
                         "same (B, M) shape")
    if rule == "threshold":
        if threshold is None:
            raise ValueError("the threshold rule needs a threshold")
        thr = torch.as_tensor(threshold, dtype=scores.dtype, device=dev).reshape(-1, 1)
        low = sim < thr
        masked = scores.masked_fill(~low, float("-inf"))
        fallback = ~low.any(dim=1)
        chosen = torch.where(fallback, sim.argmin(dim=1), masked.argmax(dim=1))
    elif rule == "combined":
        if beta is None:
            raise ValueError("the combined rule needs beta")
        chosen = (scores - beta * sim).argmax(dim=1)
        fallback = torch.zeros(len(scores), dtype=torch.bool, device=dev)
    else:
        raise ValueError(f"unknown similarity rule {rule!r}")
    chosen_score = scores.gather(1, chosen.unsqueeze(1))
    flagged = scores > chosen_score
    return Selection(chosen, flagged, fallback)


def user_thresholds(edge_users: np.ndarray, edge_sims: np.ndarray, n_users: int,
                    q: float) -> np.ndarray:
    """Per-user threshold: the ``q`` quantile (linear interpolation, as ``np.quantile``) of
    the similarities of the user's own training edges; ``+inf`` for a user with no edge (so
    nothing is ever flagged for them).

    Example:
        >>> user_thresholds(np.array([0, 0, 0, 2]), np.array([0.1, 0.5, 0.3, 0.7]), 3, 0.5).tolist()
        [0.3, inf, 0.7]
    """
    edge_users = np.asarray(edge_users, dtype=np.int64)
    edge_sims = np.asarray(edge_sims, dtype=np.float64)
    out = np.full(n_users, np.inf)
    if not len(edge_users):
        return out
    order = np.lexsort((edge_sims, edge_users))
    users, sims = edge_users[order], edge_sims[order]
    starts = np.searchsorted(users, np.arange(n_users), side="left")
    ends = np.searchsorted(users, np.arange(n_users), side="right")
    counts = ends - starts
    has = counts > 0
    pos = q * (counts[has] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts[has] - 1)
    frac = pos - lo
    base = starts[has]
    out[has] = sims[base + lo] * (1 - frac) + sims[base + hi] * frac
    return out
