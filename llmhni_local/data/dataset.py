"""The one in-memory data object every stage reads.

Interactions are stored as ``(n, 2)`` int64 arrays of ``(user, item)`` indices. Training edges
may carry an explicit rating and a ground-truth noise flag (natural noise: rated <= 2;
synthetic noise: injected pairs). Text and metadata are optional and indexed like the ids.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from llmhni_local.core.errors import DataError


@dataclass(frozen=True, eq=False)
class Interactions:
    """A recommendation data set split into train / validation / test.

    Args:
        name: short name of the data set (used in run folders and manifests).
        n_users: number of users; user indices are ``0 .. n_users - 1``.
        n_items: number of items.
        train: ``(n_train, 2)`` int64 array of (user, item) training interactions.
        val: validation interactions, same layout (used only for early stopping).
        test: test interactions, same layout (read once, at the best validation epoch).
        train_rating: optional explicit rating per training edge (float32).
        train_noise: optional ground-truth noise flag per training edge (bool).
        user_ids: original id of each user index.
        item_ids: original id of each item index.
        user_meta: optional per-user attributes (e.g. age, gender, occupation).
        item_meta: optional per-item attributes (e.g. title, year, genres).
        user_text: optional ready-made user profiles (e.g. RLMRec's ``usr_prf.pkl``).
        item_text: optional ready-made item profiles.
        sources: files the data came from, mapped to their sha256 (for manifests).
        notes: what was done while loading (duplicates dropped, noise added, ...).
    """

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_rating: np.ndarray | None = None
    train_noise: np.ndarray | None = None
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    user_meta: list[dict[str, str]] | None = None
    item_meta: list[dict[str, str]] | None = None
    user_text: list[str] | None = None
    item_text: list[str] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            arr = getattr(self, split)
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise DataError(f"{self.name}: {split} must be an (n, 2) array of (user, item)")
            if len(arr) and (arr[:, 0].min() < 0 or arr[:, 0].max() >= self.n_users
                             or arr[:, 1].min() < 0 or arr[:, 1].max() >= self.n_items):
                raise DataError(f"{self.name}: {split} holds an index outside the id maps")
        for opt in ("train_rating", "train_noise"):
            arr = getattr(self, opt)
            if arr is not None and len(arr) != len(self.train):
                raise DataError(f"{self.name}: {opt} has {len(arr)} entries for "
                                f"{len(self.train)} training edges")

    # ------------------------------------------------------------------ views
    def replace(self, **changes) -> "Interactions":
        return dataclasses.replace(self, **changes)

    def user_item_lists(self, split: str = "train") -> list[np.ndarray]:
        """Per-user sorted item arrays of one split."""
        arr = getattr(self, split)
        order = np.lexsort((arr[:, 1], arr[:, 0]))
        arr = arr[order]
        bounds = np.searchsorted(arr[:, 0], np.arange(self.n_users + 1))
        return [arr[bounds[u]:bounds[u + 1], 1] for u in range(self.n_users)]

    def csr(self, split: str = "train"):
        """The split as a scipy CSR user x item matrix of ones."""
        import scipy.sparse as sp

        arr = getattr(self, split)
        return sp.csr_matrix((np.ones(len(arr), dtype=np.float32), (arr[:, 0], arr[:, 1])),
                             shape=(self.n_users, self.n_items))

    def info(self) -> dict:
        """Counts for ``data info``."""
        n_train, n_val, n_test = len(self.train), len(self.val), len(self.test)
        total = n_train + n_val + n_test
        out = {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "train": n_train,
            "val": n_val,
            "test": n_test,
            "density": total / max(1, self.n_users * self.n_items),
            "sparsity": 1.0 - total / max(1, self.n_users * self.n_items),
            "users_with_test": int(len(np.unique(self.test[:, 0]))) if n_test else 0,
        }
        if self.train_noise is not None:
            out["train_noise"] = int(self.train_noise.sum())
            out["train_noise_share"] = float(self.train_noise.mean()) if n_train else 0.0
        out["has_ratings"] = self.train_rating is not None
        out["has_user_text"] = self.user_text is not None or self.user_meta is not None
        out["has_item_text"] = self.item_text is not None or self.item_meta is not None
        if self.notes:
            out["notes"] = list(self.notes)
        return out
