"""Negative samplers over a set of positive (user, item) pairs."""

from __future__ import annotations

import numpy as np


class UniformNegatives:
    """Uniform items the user has no positive edge with (rejection sampling).

    Args:
        positives: ``(E, 2)`` (user, item) pairs the sampler must never return.
        n_items: number of items.
    """

    def __init__(self, positives: np.ndarray, n_items: int) -> None:
        self.n_items = n_items
        self._keys = np.unique(positives[:, 0].astype(np.int64) * n_items + positives[:, 1])

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1)
        return self._keys[pos] == keys

    def sample(self, users: np.ndarray, rng: np.random.Generator, n: int = 1) -> np.ndarray:
        """``(len(users),)`` negatives, or ``(len(users), n)`` when ``n > 1``."""
        flat_users = np.repeat(users, n)
        items = rng.integers(0, self.n_items, size=len(flat_users))
        bad = self.is_positive(flat_users, items)
        for _ in range(100):
            if not bad.any():
                break
            items[bad] = rng.integers(0, self.n_items, size=int(bad.sum()))
            bad[bad] = self.is_positive(flat_users[bad], items[bad])
        else:
            raise RuntimeError("could not draw negatives: some user has almost every item")
        return items if n == 1 else items.reshape(len(users), n)
