"""Neighbour mixing: do user and item vectors share one space, or sit in two clusters?

LLMHNI compares users with items by the cosine of their aligned text vectors (docs/METHOD.md
stage 3); that only means something if the alignment MLP puts users among items. Its known
failure is two separate clusters, one of users and one of items: a user's nearest vectors
are users, an item's are items. :func:`neighbour_mixing` puts a number on it
(docs/DESIGN.md, "The alignment picture and the LLM's cost").

For each user, the share of its ``k`` nearest neighbours (cosine, among all sampled users and
items, itself excluded) that are items, averaged over users; the same from the items' side
(the share of users among an item's neighbours). Each share is divided by what uniform mixing
would give, ``n_other / (n_users + n_items - 1)``, so 1 means "as mixed as a random draw" and
0 "never a neighbour from the other side" on every data set, whatever its user:item ratio
(ML-100K's users see 64% items by chance, its items 36% users). ``mixing``, the headline, is
the mean of the two normalised sides.

Measured (k = 10, seed 0; ``neighbour_mixing(z["users"], z["items"])`` on ``z = np.load(f)``):

* made-up: 943 "users" and 1,682 "items" drawn from unit Gaussians in 64 dimensions: one
  shared cloud 1.01; centres 2, 4 and 8 standard deviations apart 0.67, 0.20 and 0.00;
* the ML-100K demo run (``runs/bench-comparison/lightgcn-noise0/align/``): the raw MiniLM
  profile vectors (``raw.npz``) 0.040, two clusters (users' neighbours are 0.02% items, items'
  2.8% users); the aligned vectors (``aligned.npz``) 0.489 (36.5% and 14.7%).

:data:`SPLIT_BELOW` = 0.15 lies between them (about 4x the raw, split space and a third of
the aligned, working one): an aligned space below it keeps users and items apart.

Big data is sampled: at most ``max_per_side`` users and as many items (5,000 by default),
drawn without replacement by ``seed``, so one call costs at most 10,000 x 10,000 cosines,
computed ``chunk`` rows at a time; the normalisation uses the sampled counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmhni_local.core.errors import DataError

#: Below this aligned mixing the report warns that users and items stay apart.
SPLIT_BELOW = 0.15


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sample(n: int, most: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, most, replace=False)) if n > most else np.arange(n)


def other_side_share(vectors: np.ndarray, is_item: np.ndarray, k: int = 10,
                     chunk: int = 2048) -> np.ndarray:
    """Per row, the share of its ``k`` nearest rows by cosine (itself excluded) that are on
    the other side (item for a user, user for an item).

    Example:
        >>> v = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]])
        >>> other_side_share(v, np.array([False, False, True, True]), k=1).tolist()
        [0.0, 0.0, 0.0, 0.0]
    """
    z = _unit(vectors)
    is_item = np.asarray(is_item, dtype=bool)
    out = np.empty(len(z))
    for start in range(0, len(z), chunk):
        sim = z[start:start + chunk] @ z.T
        rows = np.arange(len(sim))
        sim[rows, start + rows] = -np.inf  # not its own neighbour
        near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        own = is_item[start:start + len(sim), None]
        out[start:start + len(sim)] = (is_item[near] != own).mean(1)
    return out


def neighbour_mixing(users: np.ndarray, items: np.ndarray, k: int = 10,
                     max_per_side: int = 5000, seed: int = 0) -> dict[str, Any]:
    """How mixed users and items are among each other's ``k`` nearest neighbours.

    Returns:
        ``user_side`` / ``item_side``: mean share of items among a user's neighbours / of users
        among an item's; ``*_expected``: the same under uniform mixing; ``*_normalised``: their
        ratio; ``mixing``: the mean of the two ratios; the sampled counts and ``k``.

    Raises:
        DataError: vectors of different widths, non-finite values, or too few rows for ``k``.
    """
    users, items = np.asarray(users), np.asarray(items)
    if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
        raise DataError(f"neighbour mixing: user vectors {users.shape} and item vectors "
                        f"{items.shape} must be 2-D with the same width")
    if not (np.isfinite(users).all() and np.isfinite(items).all()):
        raise DataError("neighbour mixing: the vectors hold non-finite values")
    rng = np.random.default_rng(seed)
    u = users[_sample(len(users), max_per_side, rng)]
    i = items[_sample(len(items), max_per_side, rng)]
    n = len(u) + len(i)
    if not len(u) or not len(i) or n - 1 < k:
        raise DataError(f"neighbour mixing: {len(u)} users and {len(i)} items are too few for "
                        f"k = {k} neighbours")
    is_item = np.r_[np.zeros(len(u), bool), np.ones(len(i), bool)]
    share = other_side_share(np.concatenate([u, i]), is_item, k)
    out: dict[str, Any] = {"k": k, "users": len(u), "items": len(i), "seed": seed}
    for side, mask, others in (("user", ~is_item, len(i)), ("item", is_item, len(u))):
        expected = others / (n - 1)
        out[f"{side}_side"] = float(share[mask].mean())
        out[f"{side}_side_expected"] = expected
        out[f"{side}_side_normalised"] = float(share[mask].mean() / expected)
    out["mixing"] = (out["user_side_normalised"] + out["item_side_normalised"]) / 2
    return out


def split_apart(mixing: float, threshold: float = SPLIT_BELOW) -> bool:
    """Whether an aligned space's ``mixing`` keeps users and items in separate clusters."""
    return bool(mixing < threshold)
