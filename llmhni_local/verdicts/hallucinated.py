"""Known false edits of G', for checking what L_hal does with a rater's hallucinations
(docs/DESIGN.md, "Hallucinated edges").

A rater can be wrong two ways that change the graph: it calls an unobserved pair hard (an
edge that should not be there is *added*) or it calls a clean training pair noisy (a real
edge is *removed*). :func:`false_edits` draws both at a given rate, disjoint from the
verdicts the run already has, so a benchmark can write them beside those verdicts as one file
of verdicts from elsewhere and measure where the model puts the false edges.

False adds are drawn from pairs that occur in no split (not training, validation or test), so
no held-out answer is among them and any rise in their scores is the edit's doing; false
removals from training pairs not flagged noisy (``train_noise``: the data's own flags or
injected noise), so each removes a clean edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmhni_local.core.errors import DataError
from llmhni_local.data.dataset import Interactions


@dataclass(frozen=True)
class FalseEdits:
    """Edits no correct rater would make.

    Attributes:
        added: ``(A, 2)`` unobserved pairs in no split, to be judged hard.
        removed: ``(R, 2)`` clean training pairs, to be judged noisy.
    """

    added: np.ndarray
    removed: np.ndarray


def false_edits(data: Interactions, rate: float, seed: int,
                exclude: np.ndarray | None = None) -> FalseEdits:
    """``round(rate * n_train)`` false adds and as many false removals, drawn uniformly.

    Args:
        data: the data set (its splits and ``train_noise`` flags).
        rate: edits of each kind relative to the training size, in ``[0, 0.5]``.
        seed: seed of both draws; the same seed gives the same edits.
        exclude: ``(n, 2)`` pairs never drawn (the pairs the run's verdicts already judge).

    Raises:
        DataError: ``rate`` out of range, or too few pairs of a kind to draw from.
    """
    if not 0.0 <= rate <= 0.5:
        raise DataError(f"{data.name}: false-edit rate must be in [0, 0.5], got {rate}")
    n = int(round(rate * len(data.train)))
    rng = np.random.default_rng(seed)
    n_items = np.int64(data.n_items)
    taken = np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1, 2)
                            for a in (data.train, data.val, data.test,
                                      exclude if exclude is not None else np.zeros((0, 2)))])
    taken_codes = np.unique(taken[:, 0] * n_items + taken[:, 1])
    if data.n_users * data.n_items - len(taken_codes) < n:
        raise DataError(f"{data.name}: fewer than {n} unobserved pairs to add falsely")
    added = np.zeros(0, dtype=np.int64)
    while len(added) < n:  # rejection sampling: unobserved pairs vastly outnumber the rest
        draw = (rng.integers(0, data.n_users, 2 * n) * n_items
                + rng.integers(0, data.n_items, 2 * n))
        draw = draw[~np.isin(draw, taken_codes)]
        added = np.concatenate([added, draw[~np.isin(draw, added)]])
        _, first = np.unique(added, return_index=True)
        added = added[np.sort(first)]
    added = added[:n]

    train = np.asarray(data.train, dtype=np.int64)
    clean = np.ones(len(train), dtype=bool) if data.train_noise is None else ~data.train_noise
    if exclude is not None and len(exclude):
        ex = np.asarray(exclude, dtype=np.int64).reshape(-1, 2)
        clean &= ~np.isin(train[:, 0] * n_items + train[:, 1], ex[:, 0] * n_items + ex[:, 1])
    pool = np.flatnonzero(clean)
    if len(pool) < n:
        raise DataError(f"{data.name}: fewer than {n} clean training pairs to remove falsely")
    removed = train[np.sort(rng.choice(pool, size=n, replace=False))]
    return FalseEdits(added=np.stack([added // n_items, added % n_items], 1), removed=removed)
