"""The denoised graph G' from the verdicts (docs/METHOD.md stage 7).

``G' = G - {observed pairs judged noisy} + {unobserved pairs judged hard}``. Observed pairs
judged hard (hard positives) stay, unobserved pairs judged noisy (true negatives) stay out:
neither changes the graph.

A verdict table has one row per rated pair, as a pandas DataFrame or a numpy structured array
with these columns:

========== ======= ==========================================================
column     type    meaning
========== ======= ==========================================================
user       int     user index
item       int     item index
kind       str     ``observed`` (a training edge) or ``unobserved`` (not one)
verdict    str     ``hard`` or ``noisy``
p_hard     float   optional: probability of "hard" (both views High)
simulated  bool    optional: the verdict came from the simulated rater
========== ======= ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmhni_local.core.errors import DataError

KINDS: tuple[str, ...] = ("observed", "unobserved")
VERDICTS: tuple[str, ...] = ("hard", "noisy")
REQUIRED_COLUMNS: tuple[str, ...] = ("user", "item", "kind", "verdict")

#: Row layout of a verdict table as a numpy structured array.
VERDICT_DTYPE = np.dtype([("user", np.int64), ("item", np.int64), ("kind", "U10"),
                          ("verdict", "U5"), ("p_hard", np.float64), ("simulated", np.bool_)])


@dataclass(frozen=True)
class DenoiseReport:
    """How G' differs from G.

    Args:
        edges_G: edges of G (distinct pairs).
        edges_Gprime: edges of G'.
        removed: ``(n, 2)`` observed pairs judged noisy, removed.
        added: ``(n, 2)`` unobserved pairs judged hard, added.
        kept_hard: observed pairs judged hard (kept).
        rejected_unobserved: unobserved pairs judged noisy (left out).
        duplicate_rows: verdict rows repeating an earlier row's pair and verdict (ignored).
        simulated: any verdict came from the simulated rater.
    """

    edges_G: int
    edges_Gprime: int
    removed: np.ndarray = field(repr=False)
    added: np.ndarray = field(repr=False)
    kept_hard: int = 0
    rejected_unobserved: int = 0
    duplicate_rows: int = 0
    simulated: bool = False

    def to_dict(self) -> dict:
        """Counts only (for metrics.json and manifests)."""
        return {"edges_G": self.edges_G, "edges_Gprime": self.edges_Gprime,
                "removed": int(len(self.removed)), "added": int(len(self.added)),
                "kept_hard": self.kept_hard, "rejected_unobserved": self.rejected_unobserved,
                "duplicate_rows": self.duplicate_rows, "simulated": self.simulated}


def verdict_columns(verdicts) -> dict[str, np.ndarray]:
    """The verdict table's columns as numpy arrays, checked (DataFrame or structured array)."""
    names = list(verdicts.columns) if hasattr(verdicts, "columns") else list(verdicts.dtype.names or ())
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataError(f"verdicts: missing column {missing[0]!r} (need {', '.join(REQUIRED_COLUMNS)})")
    cols = {c: np.asarray(verdicts[c]) for c in names}
    n = len(cols["user"])
    for c in ("user", "item"):
        if n and not np.issubdtype(cols[c].dtype, np.integer):
            raise DataError(f"verdicts: column {c!r} must hold integers, got {cols[c].dtype}")
        cols[c] = cols[c].astype(np.int64)
    cols["kind"] = cols["kind"].astype(str)
    cols["verdict"] = cols["verdict"].astype(str)
    for c, allowed in (("kind", KINDS), ("verdict", VERDICTS)):
        bad = np.flatnonzero(~np.isin(cols[c], allowed))
        if len(bad):
            raise DataError(f"verdicts row {int(bad[0])}: {c} {cols[c][bad[0]]!r} is not one of "
                            f"{list(allowed)}")
    if "simulated" in cols:
        cols["simulated"] = cols["simulated"].astype(bool)
    return cols


def denoised_edges(train_edges: np.ndarray, verdicts) -> tuple[np.ndarray, DenoiseReport]:
    """Build G' from G and the verdicts.

    Args:
        train_edges: ``(E, 2)`` edges of G (the training pairs); duplicates count once.
        verdicts: the verdict table (see the module docstring).

    Returns:
        ``(edges_Gprime, report)``: the edges of G that were not removed, in their order in
        ``train_edges`` (first occurrence), followed by the added pairs sorted by (user, item).

    Raises:
        DataError: an ``observed`` row that is not a training edge, an ``unobserved`` row that
            is one, or two rows giving the same pair different verdicts.

    Example:
        >>> g = np.array([[0, 0], [0, 1], [1, 1]])
        >>> v = np.array([(0, 1, "observed", "noisy", 0.1, False),
        ...               (1, 0, "unobserved", "hard", 0.9, False)], dtype=VERDICT_DTYPE)
        >>> gp, rep = denoised_edges(g, v)
        >>> gp.tolist(), rep.to_dict()["removed"], rep.to_dict()["added"]
        ([[0, 0], [1, 1], [1, 0]], 1, 1)
    """
    g = np.asarray(train_edges, dtype=np.int64).reshape(-1, 2)
    _, first = np.unique(g, axis=0, return_index=True)
    g = g[np.sort(first)]  # distinct pairs, original order
    cols = verdict_columns(verdicts)
    n = len(cols["user"])
    if n and (cols["user"].min() < 0 or cols["item"].min() < 0):
        raise DataError("verdicts: negative user or item index")
    big = int(max(g[:, 1].max(initial=-1), cols["item"].max(initial=-1))) + 1
    g_keys = g[:, 0] * big + g[:, 1]
    v_keys = cols["user"] * big + cols["item"]

    # One verdict per pair: identical repeats are ignored, conflicting ones are an error.
    order = np.lexsort((v_keys,))
    dup = np.zeros(n, dtype=bool)
    same_key = v_keys[order][1:] == v_keys[order][:-1]
    for a, b in zip(order[:-1][same_key], order[1:][same_key]):
        if (cols["kind"][a], cols["verdict"][a]) != (cols["kind"][b], cols["verdict"][b]):
            raise DataError(f"verdicts rows {min(a, b)} and {max(a, b)}: pair "
                            f"({cols['user'][a]}, {cols['item'][a]}) has conflicting rows")
        dup[max(a, b)] = True

    in_g = np.isin(v_keys, g_keys)
    observed = cols["kind"] == "observed"
    bad = np.flatnonzero(observed & ~in_g)
    if len(bad):
        r = int(bad[0])
        raise DataError(f"verdicts row {r}: observed pair ({cols['user'][r]}, {cols['item'][r]}) "
                        "is not a training edge")
    bad = np.flatnonzero(~observed & in_g)
    if len(bad):
        r = int(bad[0])
        raise DataError(f"verdicts row {r}: unobserved pair ({cols['user'][r]}, "
                        f"{cols['item'][r]}) is a training edge")

    hard = cols["verdict"] == "hard"
    keep_rows = ~dup
    remove = keep_rows & observed & ~hard
    add = keep_rows & ~observed & hard
    kept = ~np.isin(g_keys, v_keys[remove])
    added = np.stack([cols["user"][add], cols["item"][add]], 1).reshape(-1, 2)
    added = added[np.lexsort((added[:, 1], added[:, 0]))]
    removed = np.stack([cols["user"][remove], cols["item"][remove]], 1).reshape(-1, 2)
    removed = removed[np.lexsort((removed[:, 1], removed[:, 0]))]
    g_prime = np.concatenate([g[kept], added]).astype(np.int64)
    report = DenoiseReport(
        edges_G=len(g), edges_Gprime=len(g_prime), removed=removed, added=added,
        kept_hard=int((keep_rows & observed & hard).sum()),
        rejected_unobserved=int((keep_rows & ~observed & ~hard).sum()),
        duplicate_rows=int(dup.sum()),
        simulated=bool(cols["simulated"].any()) if "simulated" in cols else False)
    return g_prime, report


def oracle_edges(train_edges: np.ndarray, train_noise: np.ndarray | None) -> np.ndarray:
    """The oracle denoiser's graph: the training edges with every ground-truth noisy one removed.

    It is the ceiling a denoiser that only removes edges can reach (the ``oracle`` method trains
    BPR on it). A pair listed more than once is removed if any copy is flagged.

    Raises:
        DataError: no flags, or flags of the wrong length.

    Example:
        >>> oracle_edges(np.array([[0, 0], [0, 1], [1, 1]]), np.array([False, True, False])).tolist()
        [[0, 0], [1, 1]]
    """
    edges = np.asarray(train_edges, dtype=np.int64).reshape(-1, 2)
    if train_noise is None:
        raise DataError("oracle: the data has no ground-truth noise flags")
    noise = np.asarray(train_noise, dtype=bool)
    if noise.shape != (len(edges),):
        raise DataError(f"oracle: {noise.shape[0]} noise flags for {len(edges)} training edges")
    big = int(edges[:, 1].max(initial=-1)) + 1
    keys = edges[:, 0] * big + edges[:, 1]
    return edges[~np.isin(keys, keys[noise])]
