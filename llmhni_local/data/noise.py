"""Synthetic noise: random unobserved (user, item) pairs added to training as false positives.

docs/METHOD.md's synthetic-noise protocol: add x% random pairs that occur in no split to the
training set only, and record them as ground-truth noise; validation and test stay clean.
Pairs are drawn uniformly over all unobserved (user, item) pairs.

The ground truth of this scenario is the injected pairs alone: any flags the data had (natural
noise, ratings <= 2 on MovieLens) are replaced, so that the oracle, the coverage and the
simulated rater all measure the noise the scenario adds (the ratings themselves are kept).
"""

from __future__ import annotations

import numpy as np

from llmhni_local.core.errors import DataError
from llmhni_local.data.dataset import Interactions


def add_synthetic_noise(data: Interactions, share: float, seed: int) -> Interactions:
    """Return a copy of ``data`` with ``round(share * n_train)`` random noisy training pairs.

    The new pairs are distinct and occur in none of train, validation or test. They are
    appended after the existing training edges with ``train_noise`` True; the existing edges'
    flags become False (see the module docstring; a note records how many were set); with
    ratings, a new edge's rating is NaN. ``data``
    itself is not modified, and the same ``seed`` gives the same pairs.

    Args:
        data: the data set to add noise to.
        share: number of new pairs relative to the training size, in ``[0, 0.5]``.
        seed: seed of the pair draw.

    Raises:
        DataError: ``share`` is out of range or there are not enough unobserved pairs.
    """
    if not 0.0 <= share <= 0.5:
        raise DataError(f"{data.name}: synthetic noise share must be in [0, 0.5], got {share}")
    n_train = len(data.train)
    n_new = int(round(share * n_train))
    n_cells = data.n_users * data.n_items
    observed = np.unique(np.concatenate([
        split[:, 0].astype(np.int64) * data.n_items + split[:, 1]
        for split in (data.train, data.val, data.test)
    ]))
    if n_new > n_cells - len(observed):
        raise DataError(f"{data.name}: cannot add {n_new} noisy pairs, only "
                        f"{n_cells - len(observed)} (user, item) pairs are unobserved")

    rng = np.random.default_rng(seed)
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < n_new:
        # draw a little more than needed, keep unobserved unseen cells in draw order
        need = n_new - len(chosen)
        draw = rng.integers(0, n_cells, size=max(2 * need, 64), dtype=np.int64)
        _, first = np.unique(draw, return_index=True)
        draw = draw[np.sort(first)]
        draw = draw[~np.isin(draw, observed) & ~np.isin(draw, chosen)]
        chosen = np.concatenate([chosen, draw[:need]])

    new = np.stack([chosen // data.n_items, chosen % data.n_items], axis=1).astype(np.int64)
    n_old_flags = int(data.train_noise.sum()) if data.train_noise is not None else 0
    train_rating = None
    if data.train_rating is not None:
        train_rating = np.concatenate([data.train_rating,
                                       np.full(n_new, np.nan, dtype=data.train_rating.dtype)])
    note = (f"added {n_new} synthetic noise interactions to train "
            f"(share {share:g} of {n_train}, seed {seed}; flagged in train_noise, which now "
            f"flags them alone; {n_old_flags} earlier flags cleared)")
    return data.replace(
        name=f"{data.name}+noise{share:g}",
        train=np.concatenate([data.train, new]),
        train_noise=np.concatenate([np.zeros(n_train, dtype=bool), np.ones(n_new, dtype=bool)]),
        train_rating=train_rating,
        notes=(*data.notes, note),
    )
