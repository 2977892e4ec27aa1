"""The guards on verdicts made elsewhere (an imported verdicts file, or judgments imported
from a file and decided here; docs/IMPORTING.md, "Two guards"): no held-out answer enters G'
by default, and no user loses every training edge."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Why a row's action is not its verdict's (column ``reason``; ``""``: it is).
HELD_OUT, LAST_EDGES = "held_out", "last_edges_of_user"


def _pair_keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0] * n_items + pairs[:, 1]


def guard_imported(table: Any, *, train: np.ndarray, val: np.ndarray, test: np.ndarray,
                   n_users: int, n_items: int, keep_held_out: bool = False) -> dict[str, Any]:
    """The two guards on verdicts that come from a file made elsewhere (verdicts or
    judgments), applied to ``table`` in place; returns their counts.

    * an ``add`` on a validation or test pair would put a held-out answer into training
      unless the outside rater truly predicted it: counted and, unless ``keep_held_out``,
      made ``none`` (reason ``held_out``; validation first where a pair is in both);
    * a user every training edge of whom the removals take keeps them (``keep``, reason
      ``last_edges_of_user``).

    ``table`` needs ``user``, ``item`` (indices) and ``action``; ``reason`` and ``held_out``
    columns are added. Returns ``{"held_out": {"validation", "test", "kept_as_adds"},
    "users_kept": {"users", "edges"}}``.
    """
    users = table["user"].to_numpy(np.int64)
    keys = users * n_items + table["item"].to_numpy(np.int64)
    action = table["action"].to_numpy(object).copy()
    reason = np.full(len(keys), "", dtype=object)
    in_val = np.isin(keys, _pair_keys(val, n_items))
    in_test = np.isin(keys, _pair_keys(test, n_items)) & ~in_val
    held_out = np.where(in_val, "validation", np.where(in_test, "test", "")).astype(object)
    leak = (action == "add") & (held_out != "")
    if not keep_held_out:
        action[leak] = "none"
        reason[leak] = HELD_OUT
    edges = np.unique(_pair_keys(train, n_items))
    degree = np.bincount(edges // n_items, minlength=n_users)
    removing = action == "remove"
    removed_per_user = np.bincount(users[removing], minlength=n_users)
    emptied = np.flatnonzero((degree > 0) & (removed_per_user >= degree))
    spare = removing & np.isin(users, emptied)
    action[spare] = "keep"
    reason[spare] = LAST_EDGES
    table["action"] = action.astype(str)
    table["reason"] = reason.astype(str)
    table["held_out"] = held_out.astype(str)
    return {"held_out": {"validation": int((leak & in_val).sum()),
                         "test": int((leak & in_test).sum()),
                         "kept_as_adds": bool(keep_held_out)},
            "users_kept": {"users": int(len(emptied)), "edges": int(spare.sum())}}
