"""Candidate pairs for the LLM to rate (docs/METHOD.md stage 5).

From a recommender pretrained on the training data, per user:

* ``unobserved``: the ``k_neg`` highest-scored items the user has no TRAINING interaction with
  (possible false negatives / hard positives). Only training items are excluded: this stage
  sees training data only, so validation and test items may well be among them (that is what
  the identification metric "share of unobserved-hard pairs found in held-out data" measures).
* ``observed``: the lowest-scored training items of the user (possible noise): per user
  ``max(k_pos, ceil(k_pos_share * n_u))`` of the user's ``n_u`` training items (at most
  ``n_u``). A count alone gives every user the same number, which cannot reach the noise of
  users with many interactions; a share scales with the user. With ``k_pos = 0`` the share
  alone decides; with both set, the count is a floor for users with few items.

The candidate set's **coverage** (:func:`coverage`) is the share of the ground-truth noisy
training edges that are observed candidates at all: no rater can find a noisy edge that is not
a candidate, so a rater's identification recall is bounded by it.

Budget (a cap on the total number of pairs, since it sets the LLM cost). When the full lists
hold more pairs than ``budget``:

1. the budget is split between the kinds in proportion ``k_neg : k_pos`` (with
   ``k_pos_share``: in proportion to the full lists' sizes; the unobserved share rounded up); a kind with fewer pairs than its share gives the rest
   to the other kind;
2. inside a kind, pairs are taken round-robin over users by rank: every user's rank-0
   candidate, then every user's rank-1 candidate, and so on, users visited in an order
   shuffled by ``seed``. So every user gets as equal a share as possible, each user's most
   confident candidates come first, and the seed alone decides which users get one more.

The output is sorted by user, then kind, then rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from llmhni_local.core.errors import ConfigError, DataError, UserError
from llmhni_local.core.io import atomic_path

if TYPE_CHECKING:
    from llmhni_local.data.dataset import Interactions

#: Where a run folder keeps its candidate pairs (:func:`save_candidates`).
CANDIDATES_FILE = "candidates.parquet"

KINDS: tuple[str, ...] = ("unobserved", "observed")

#: Row layout of a candidate array.
CANDIDATE_DTYPE = np.dtype([("user", np.int64), ("item", np.int64), ("kind", "U10"),
                            ("rank", np.int32), ("score", np.float32)])


@dataclass(frozen=True)
class CandidateSettings:
    """The candidate set C.

    Args:
        k_neg: highest-scored unobserved items per user. (default: ``5``)
        k_pos: lowest-scored observed (training) items per user; with ``k_pos_share`` a
            floor. (default: ``5``)
        k_pos_share: share of each user's training items taken as observed candidates
            (rounded up); the user gets ``max(k_pos, ceil(k_pos_share * n_u))``. 0 turns it
            off. On MovieLens-100K under natural noise 0.2 makes about 16,000 observed pairs.
            (default: ``0.0``)
        budget: most pairs in all; 0 means no cap. It sets the LLM cost: 1,000 pairs are
            2,000 judgments (two views), which took 852 s through vLLM with SmolLM2-135M in
            fp32 on 2 CPU cores (the demo config uses 500). (default: ``1000``)
        seed: seed of the user order when the budget cuts. (default: ``0``)
        batch_users: users scored at once (bounds memory to batch x items). (default: ``1024``)
    """

    k_neg: int = 5
    k_pos: int = 5
    k_pos_share: float = 0.0
    budget: int = 1000
    seed: int = 0
    batch_users: int = 1024

    def __post_init__(self) -> None:
        if self.k_neg < 0 or self.k_pos < 0:
            raise ConfigError(f"candidates.k_neg and candidates.k_pos must be >= 0, got "
                              f"{self.k_neg} and {self.k_pos}")
        if not 0.0 <= self.k_pos_share <= 1.0:
            raise ConfigError(f"candidates.k_pos_share must be in [0, 1], got {self.k_pos_share}")
        if self.k_neg + self.k_pos == 0 and self.k_pos_share == 0:
            raise ConfigError("candidates.k_neg, candidates.k_pos and candidates.k_pos_share "
                              "are all 0: the candidate set would be empty")
        if self.budget < 0:
            raise ConfigError(f"candidates.budget must be >= 0, got {self.budget}")
        if self.batch_users <= 0:
            raise ConfigError(f"candidates.batch_users must be > 0, got {self.batch_users}")


def select_candidates(score_fn: Callable[[np.ndarray], np.ndarray],
                      train_lists: Sequence[np.ndarray], n_items: int, *, k_neg: int, k_pos: int,
                      k_pos_share: float = 0.0, budget: int = 0, seed: int = 0,
                      batch_users: int = 1024) -> np.ndarray:
    """Choose the candidate pairs.

    Args:
        score_fn: ``score_fn(users) -> (len(users), n_items)`` scores of the pretrained
            recommender (higher = more likely).
        train_lists: per user, the user's training items (only these are read).
        n_items: number of items.
        k_neg: unobserved items per user (highest scores).
        k_pos: observed items per user (lowest scores); a floor when ``k_pos_share`` is set.
        k_pos_share: share of the user's training items taken as observed candidates
            (rounded up); see the module docstring.
        budget: most pairs in all (0: no cap); see the module docstring for the rule.
        seed: seed of the user order under a budget.
        batch_users: users scored per call of ``score_fn``.

    Returns:
        A structured array of :data:`CANDIDATE_DTYPE` rows ``(user, item, kind, rank, score)``;
        ``rank`` is 0 for the most confident candidate of its kind (highest-scored unobserved,
        lowest-scored observed).

    Example:
        >>> s = np.array([[0.9, 0.1, 0.5, 0.3]])
        >>> c = select_candidates(lambda u: s[u], [np.array([2, 3])], 4, k_neg=1, k_pos=1)
        >>> [(int(r["item"]), str(r["kind"])) for r in c]
        [(0, 'unobserved'), (3, 'observed')]
    """
    n_users = len(train_lists)
    rows: list[tuple] = []
    for start in range(0, n_users, batch_users):
        users = np.arange(start, min(start + batch_users, n_users), dtype=np.int64)
        scores = np.asarray(score_fn(users), dtype=np.float64)
        if scores.shape != (len(users), n_items):
            raise DataError(f"candidates: the recommender gave scores of shape {scores.shape} "
                            f"for {len(users)} users and {n_items} items")
        if not np.isfinite(scores).all():
            raise DataError("candidates: the recommender gave non-finite scores")
        for row, u in enumerate(users):
            s = scores[row]
            seen = np.unique(np.asarray(train_lists[u], dtype=np.int64))
            if k_neg:
                masked = s.copy()
                masked[seen] = -np.inf
                n_free = n_items - len(seen)
                top = _top(masked, min(k_neg, n_free), largest=True)
                rows.extend((u, i, "unobserved", r, s[i]) for r, i in enumerate(top))
            n_pos = n_observed(len(seen), k_pos, k_pos_share)
            if n_pos:
                low = seen[_top(s[seen], n_pos, largest=False)]
                rows.extend((u, i, "observed", r, s[i]) for r, i in enumerate(low))
    out = np.array(rows, dtype=CANDIDATE_DTYPE) if rows else np.empty(0, CANDIDATE_DTYPE)
    if budget and len(out) > budget:
        # With a share, users list different numbers of observed pairs: the budget then splits
        # in proportion to the full lists' sizes instead of k_neg : k_pos.
        w_neg, w_pos = ((k_neg, k_pos) if not k_pos_share else
                        (int((out["kind"] == "unobserved").sum()),
                         int((out["kind"] == "observed").sum())))
        out = _apply_budget(out, budget, w_neg, w_pos, seed)
    order = np.lexsort((out["rank"], out["kind"] == "observed", out["user"]))
    return out[order]


def n_observed(n_u: int, k_pos: int, k_pos_share: float) -> int:
    """Observed candidates of a user with ``n_u`` training items:
    ``min(n_u, max(k_pos, ceil(k_pos_share * n_u)))``.

    Example:
        >>> n_observed(12, 5, 0.2), n_observed(40, 5, 0.2), n_observed(3, 5, 0.0)
        (5, 8, 3)
    """
    by_share = int(np.ceil(k_pos_share * n_u - 1e-9)) if k_pos_share > 0 else 0
    return int(min(n_u, max(k_pos, by_share)))


def _top(values: np.ndarray, k: int, *, largest: bool) -> np.ndarray:
    """Indices of the k largest (or smallest) values, best first; ties by lower index."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    key = -values if largest else values
    # A stable sort makes ties deterministic (lower index first); lists are short.
    return np.argsort(key, kind="stable")[:k].astype(np.int64)


def _apply_budget(c: np.ndarray, budget: int, k_neg: int, k_pos: int, seed: int) -> np.ndarray:
    avail = {kind: int((c["kind"] == kind).sum()) for kind in KINDS}
    share_neg = int(np.ceil(budget * k_neg / (k_neg + k_pos)))
    quota = {"unobserved": min(share_neg, avail["unobserved"])}
    quota["observed"] = min(budget - quota["unobserved"], avail["observed"])
    quota["unobserved"] = min(budget - quota["observed"], avail["unobserved"])  # leftovers
    rng = np.random.default_rng(seed)
    position = np.empty(int(c["user"].max()) + 1, dtype=np.int64)
    position[rng.permutation(len(position))] = np.arange(len(position))
    keep = []
    for kind in KINDS:
        idx = np.flatnonzero(c["kind"] == kind)
        order = np.lexsort((position[c["user"][idx]], c["rank"][idx]))  # rank, then user order
        keep.append(idx[order[:quota[kind]]])
    return c[np.concatenate(keep)]


def candidates_frame(c: np.ndarray):
    """The candidates as a pandas DataFrame (for saving)."""
    import pandas as pd

    return pd.DataFrame({name: c[name] for name in CANDIDATE_DTYPE.names})


def save_candidates(path, c: np.ndarray) -> None:
    """Write candidates as parquet, atomically."""
    with atomic_path(path) as tmp:
        candidates_frame(c).to_parquet(tmp, index=False, engine="pyarrow")


def load_candidates(path) -> np.ndarray:
    """Read a candidates parquet file back into a :data:`CANDIDATE_DTYPE` array."""
    import pandas as pd

    if not Path(path).is_file():
        raise UserError(f"{path}: no candidates here; run the `candidates` stage first")
    df = pd.read_parquet(path)
    missing = [n for n in CANDIDATE_DTYPE.names if n not in df.columns]
    if missing:
        raise DataError(f"{path}: lacks column {missing[0]!r}")
    bad = sorted(set(df["kind"]) - set(KINDS))
    if bad:
        raise DataError(f"{path}: unknown candidate kind {bad[0]!r}")
    out = np.empty(len(df), dtype=CANDIDATE_DTYPE)
    for n in CANDIDATE_DTYPE.names:
        out[n] = df[n].to_numpy()
    return out


def count_kinds(c: np.ndarray) -> dict[str, int]:
    return {kind: int((c["kind"] == kind).sum()) for kind in KINDS}


def coverage(c, train_edges: np.ndarray, train_noise: np.ndarray | None) -> dict[str, Any]:
    """How much of the ground-truth noise the candidate set can reach at all.

    Args:
        c: candidate rows with ``user``, ``item`` and ``kind`` (array or DataFrame).
        train_edges: ``(E, 2)`` training pairs.
        train_noise: ``(E,)`` ground-truth noise flags, or None (no ground truth).

    Returns:
        ``{"flagged": F, "covered": n, "coverage": n / F}``: ``F`` distinct flagged training
        pairs, ``n`` of them observed candidates; ``coverage`` is NaN when ``F`` is 0. An
        empty dict without flags.

    Example:
        >>> c = np.array([(0, 1, "observed"), (0, 2, "unobserved")],
        ...              dtype=[("user", int), ("item", int), ("kind", "U10")])
        >>> coverage(c, np.array([[0, 1], [0, 3], [1, 1]]), np.array([True, True, False]))
        {'flagged': 2, 'covered': 1, 'coverage': 0.5}
    """
    if train_noise is None:
        return {}
    edges = np.asarray(train_edges, dtype=np.int64).reshape(-1, 2)
    noise = np.asarray(train_noise, dtype=bool)
    kinds = np.asarray(c["kind"]).astype(str)
    obs = kinds == "observed"
    users = np.asarray(c["user"], dtype=np.int64)[obs]
    items = np.asarray(c["item"], dtype=np.int64)[obs]
    big = int(max(edges[:, 1].max(initial=-1), items.max(initial=-1))) + 1
    flagged = np.unique(edges[noise, 0] * big + edges[noise, 1])
    covered = int(np.isin(flagged, users * big + items).sum())
    share = covered / len(flagged) if len(flagged) else float("nan")
    return {"flagged": int(len(flagged)), "covered": covered, "coverage": float(share)}


# ---------------------------------------------------------------------------- coverage cost
# What a coverage of the noise costs in pairs and LLM time: ``rater assess`` and the run report
# (docs/DESIGN.md, "The alignment picture and the LLM's cost") both read these two.
def coverage_costs(score_fn: Callable[[np.ndarray], np.ndarray], data: Interactions,
                   targets: tuple[float, ...]) -> dict[str, Any]:
    """Observed candidate pairs that a coverage of ``targets`` of the flagged (truly noisy)
    training pairs needs under Rec_pre's ranking, the cheaper of the candidate machinery's two
    ways: the same count per user (``candidates.k_pos``) or a share of each user's training
    items (``candidates.k_pos_share``, ``k_pos = 0``); see the module's docstring.

    A flagged pair of rank ``r`` (0: the user's lowest-scored training item) among the
    ``n_u`` training items of its user is a candidate from ``k_pos = r + 1`` or from
    ``k_pos_share = (r + 1) / n_u`` on, so the least setting for coverage ``c`` is the
    ``ceil(c F)``-th smallest of these over the ``F`` flagged pairs."""
    if data.train_noise is None:
        return {"available": False, "why": f"{data.name} has no ground-truth noise flags"}
    ranked = select_candidates(score_fn, data.user_item_lists("train"), data.n_items, k_neg=0,
                               k_pos=0, k_pos_share=1.0)  # every training pair, ranked
    n_u = np.bincount(ranked["user"], minlength=data.n_users)
    flag = {(int(u), int(i)) for (u, i), f in zip(data.train, data.train_noise) if f}
    is_flag = np.array([(int(u), int(i)) in flag for u, i in zip(ranked["user"],
                                                                 ranked["item"])], dtype=bool)
    ranks, owners = ranked["rank"][is_flag].astype(np.int64), ranked["user"][is_flag]
    if not len(ranks):
        return {"available": False, "why": "no training pair is flagged noisy"}
    need_k = np.sort(ranks + 1)
    need_share = np.sort((ranks + 1) / n_u[owners])
    rows = []
    for c in targets:
        m = max(1, math.ceil(c * len(ranks) - 1e-9))
        k, share = int(need_k[m - 1]), float(need_share[m - 1])
        by_k = int(sum(n_observed(int(n), k, 0.0) for n in n_u))
        by_share = int(sum(n_observed(int(n), 0, share) for n in n_u))
        way = ({"candidates.k_pos": k, "candidates.k_pos_share": 0.0} if by_k <= by_share
               else {"candidates.k_pos": 0, "candidates.k_pos_share": share})
        per_user = np.array([n_observed(int(n), way["candidates.k_pos"],
                                        way["candidates.k_pos_share"]) for n in n_u])
        keep_rank = ranked["rank"] < per_user[ranked["user"]]
        got = coverage(ranked[keep_rank], data.train, data.train_noise)["coverage"]
        rows.append({"coverage": c, "observed_pairs": min(by_k, by_share),
                     "pairs_by_k_pos": by_k, "pairs_by_share": by_share, "settings": way,
                     "coverage_reached": got})
    return {"available": True, "flagged": len(ranks), "targets": rows}


def add_times(costs: dict[str, Any], speed: float | None, start_s: float | None,
              unobserved: int) -> None:
    """Add judgments and seconds to each coverage row: 2 judgments per pair (two views),
    observed pairs alone and with the run's unobserved candidates, at ``speed``."""
    for row in costs.get("targets", []):
        for name, pairs in (("observed", row["observed_pairs"]),
                            ("with_unobserved", row["observed_pairs"] + unobserved)):
            j = 2 * pairs
            row[f"judgments_{name}"] = j
            row[f"seconds_{name}"] = (j / speed + (start_s or 0.0)) if speed else None
