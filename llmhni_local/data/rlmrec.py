"""RLMRec-format data folders (RLMRec, WWW 2024; reused by LLMHD, LLaRD and LLMHNI).

A folder holds ``trn_mat.pkl``, ``val_mat.pkl`` and ``tst_mat.pkl``, each a pickled
``scipy.sparse`` matrix of shape users x items with value 1.0 per interaction, and optionally
``usr_prf.pkl`` / ``itm_prf.pkl``: dicts mapping an index to ``{"profile": text, ...}`` (a plain
string is accepted too). Every file is read with the restricted unpickler of
:mod:`llmhni_local.data.safe_pickle`. Ids are the matrix indices as strings; the data carries no
ratings, so there are no ground-truth noise flags (add synthetic noise for those).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.core.errors import DataError
from llmhni_local.core.io import sha256_file
from llmhni_local.data.dataset import Interactions
from llmhni_local.data.safe_pickle import safe_load

SPLIT_FILES = {"train": "trn_mat.pkl", "val": "val_mat.pkl", "test": "tst_mat.pkl"}
PROFILE_FILES = {"user": "usr_prf.pkl", "item": "itm_prf.pkl"}


def _pairs(obj: Any, path: Path) -> tuple[np.ndarray, tuple[int, int], int]:
    """(user, item) pairs of one sparse matrix, sorted, without stored zeros or duplicates.

    Returns the pairs, the matrix shape and how many duplicate entries were merged.
    """
    import scipy.sparse as sp

    if not sp.issparse(obj):
        raise DataError(f"{path}: expected a scipy.sparse matrix, got {type(obj).__name__}")
    try:
        coo = sp.coo_matrix(obj)
        shape = (int(coo.shape[0]), int(coo.shape[1]))
        row = np.asarray(coo.row, dtype=np.int64)
        col = np.asarray(coo.col, dtype=np.int64)
        val = np.asarray(coo.data)
    except Exception as exc:  # a pickle can hold a matrix whose fields do not fit together
        raise DataError(f"{path}: not a valid sparse matrix ({exc})") from None
    if not (len(row) == len(col) == len(val)):
        raise DataError(f"{path}: row, col and data of the matrix differ in length")
    if len(row) and (row.min() < 0 or row.max() >= shape[0] or col.min() < 0
                     or col.max() >= shape[1]):
        raise DataError(f"{path}: an index lies outside the matrix shape {shape}")
    keep = val != 0  # a stored zero is no interaction
    keys = np.unique(row[keep] * shape[1] + col[keep])
    merged = int(keep.sum()) - len(keys)
    pairs = np.stack([keys // shape[1], keys % shape[1]], axis=1).astype(np.int64)
    return pairs, shape, merged


def _profiles(path: Path, n: int, kind: str) -> tuple[list[str], int]:
    """Texts of one profile pickle, indexed 0..n-1; returns them and how many were missing."""
    obj = safe_load(path)
    if isinstance(obj, (list, tuple)):
        obj = dict(enumerate(obj))
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict of {kind} index -> profile, "
                        f"got {type(obj).__name__}")
    texts: list[str | None] = [None] * n
    for key, value in obj.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise DataError(f"{path}: key {key!r} is not a {kind} index") from None
        if not 0 <= index < n:
            raise DataError(f"{path}: {kind} index {index} is outside 0..{n - 1}")
        if isinstance(value, dict):
            if "profile" not in value:
                raise DataError(f"{path}: entry {index} has no 'profile' key "
                                f"(keys: {', '.join(map(str, value))})")
            value = value["profile"]
        if not isinstance(value, str):
            raise DataError(f"{path}: the profile of {kind} {index} is a "
                            f"{type(value).__name__}, not text")
        texts[index] = value
    missing = sum(t is None for t in texts)
    return [t if t is not None else "" for t in texts], missing


def load_rlmrec(folder: str | os.PathLike) -> Interactions:
    """Load an RLMRec-format folder.

    Args:
        folder: folder holding ``trn_mat.pkl``, ``val_mat.pkl``, ``tst_mat.pkl`` and,
            optionally, ``usr_prf.pkl`` / ``itm_prf.pkl``.

    Raises:
        DataError: a split file is missing or not a sparse matrix, the splits' shapes differ,
            or a validation / test user has no training interaction.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: RLMRec data folder not found")
    missing = [f for f in SPLIT_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder}: RLMRec data folder lacks {', '.join(missing)}")

    splits: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, int]] = {}
    notes: list[str] = []
    for split, fname in SPLIT_FILES.items():
        path = folder / fname
        pairs, shape, merged = _pairs(safe_load(path), path)
        splits[split], shapes[split] = pairs, shape
        if merged:
            notes.append(f"{fname}: merged {merged} duplicate entries")
    n_users, n_items = shapes["train"]
    for split in ("val", "test"):
        if shapes[split] != shapes["train"]:
            raise DataError(f"{folder / SPLIT_FILES[split]}: shape {shapes[split]} differs from "
                            f"{SPLIT_FILES['train']}'s {shapes['train']}")

    has_train = np.zeros(n_users, dtype=bool)
    has_train[splits["train"][:, 0]] = True
    for split in ("val", "test"):
        users = splits[split][:, 0]
        orphans = np.unique(users[~has_train[users]])
        if len(orphans):
            raise DataError(f"{folder / SPLIT_FILES[split]}: user index {int(orphans[0])} has no "
                            f"training interaction ({len(orphans)} such users)")

    texts: dict[str, list[str] | None] = {"user": None, "item": None}
    for kind, fname in PROFILE_FILES.items():
        path = folder / fname
        if path.is_file():
            texts[kind], n_missing = _profiles(path, n_users if kind == "user" else n_items, kind)
            if n_missing:
                notes.append(f"{fname}: {n_missing} {kind}s have no profile (empty text)")

    sources = {f"{folder.name}/{f}": sha256_file(folder / f)
               for f in (*SPLIT_FILES.values(), *PROFILE_FILES.values()) if (folder / f).is_file()}
    return Interactions(
        name=folder.resolve().name,
        n_users=n_users,
        n_items=n_items,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        user_ids=[str(u) for u in range(n_users)],
        item_ids=[str(i) for i in range(n_items)],
        user_text=texts["user"],
        item_text=texts["item"],
        sources=sources,
        notes=tuple(notes),
    )
