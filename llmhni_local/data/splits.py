"""Per-user splits of interaction logs (pure functions over numpy arrays)."""

from __future__ import annotations

import numpy as np


def chronological_split(users: np.ndarray, timestamps: np.ndarray,
                        fractions: tuple[float, float] = (0.8, 0.1)) -> np.ndarray:
    """Assign each interaction to 0 (train), 1 (validation) or 2 (test) by per-user time.

    Per user, interactions are ordered by time (ties keep their order in the input, a stable
    sort), the first ``floor(0.8 n)`` go to train, the next up to ``floor(0.9 n)`` to
    validation and the rest to test. On MovieLens-100K this reproduces the counts in docs/METHOD.md.
    """
    n = len(users)
    order = np.argsort(timestamps, kind="stable")
    order = order[np.argsort(users[order], kind="stable")]
    part = np.empty(n, dtype=np.int8)
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], n]
    f_train, f_val = fractions
    for s, e in zip(starts, ends):
        m = e - s
        a = int(f_train * m)
        b = int((f_train + f_val) * m)
        idx = order[s:e]
        part[idx[:a]] = 0
        part[idx[a:b]] = 1
        part[idx[b:]] = 2
    return part


def random_split(users: np.ndarray, seed: int,
                 fractions: tuple[float, float] = (0.8, 0.1)) -> np.ndarray:
    """Like :func:`chronological_split` but with a seeded random order inside each user."""
    rng = np.random.default_rng(seed)
    return chronological_split(users, rng.permutation(len(users)), fractions)
