"""Batched full-ranking evaluation with masking.

Scores every item for a chunk of users at a time (never a users x items matrix for all users),
sets the user's training items (and validation items when testing) to -inf, takes the top
``max(ks)`` and averages :func:`ranking_metrics` over users with at least one truth item.

Scores, masking and top-K run on the embeddings' device (CPU or CUDA); only the ``(B, K)``
top-K indices come back to the CPU, where the metrics are computed. A chunk holds at most
``max_scores`` scores, so a large item set shrinks the chunk instead of filling the GPU; each
user's masked ranking is the same whatever the chunk, so chunking never changes a metric.
"""

from __future__ import annotations

import numpy as np
import torch

from llmhni_local.core.progress import progress_bar
from llmhni_local.eval.metrics import ranking_metrics


def _by_user(pairs: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, items)`` CSR-style grouping of (user, item) pairs."""
    order = np.argsort(pairs[:, 0], kind="stable")
    items = pairs[order, 1]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, pairs[:, 0] + 1, 1)
    return np.cumsum(indptr), items


#: Most scores one chunk holds (float32: 256 MiB), whatever ``batch_users`` asks.
MAX_SCORES = 2**26


def chunk_users(batch_users: int, n_items: int, max_scores: int = MAX_SCORES) -> int:
    """Users per chunk: ``batch_users``, fewer when ``batch_users x n_items`` scores would
    pass ``max_scores``, never fewer than one.

    >>> chunk_users(1024, 1682), chunk_users(1024, 1_000_000), chunk_users(8, 10**9)
    (1024, 67, 1)
    """
    return max(1, min(batch_users, max_scores // max(1, n_items)))


def evaluate_ranking(user_emb: torch.Tensor, item_emb: torch.Tensor, truth: np.ndarray,
                     masked: list[np.ndarray], *, ks: tuple[int, ...] = (10, 20),
                     batch_users: int = 1024, progress: bool = False,
                     per_user: dict[str, np.ndarray] | None = None,
                     max_scores: int = MAX_SCORES) -> dict[str, float]:
    """Mean Recall@K / NDCG@K over users with at least one truth item.

    Args:
        user_emb: ``(U, d)`` final user embeddings, on any device.
        item_emb: ``(I, d)`` final item embeddings, on the same device.
        truth: ``(n, 2)`` (user, item) pairs to find (validation or test).
        masked: (user, item) pair arrays whose items are removed from each user's ranking
            (training; plus validation when testing).
        ks: cut-offs.
        batch_users: users scored at once. (default: ``1024``)
        per_user: if given, filled with ``users`` (the evaluated users, ascending) and each
            metric's per-user values in that order (for paired tests over users).
        max_scores: most scores held at once; bounds the chunk for large item sets
            (:func:`chunk_users`). (default: :data:`MAX_SCORES`)
    """
    n_users, n_items = user_emb.shape[0], item_emb.shape[0]
    device = user_emb.device
    t_ptr, t_items = _by_user(truth, n_users)
    m_groups = [_by_user(m, n_users) for m in masked]
    users = np.flatnonzero(np.diff(t_ptr) > 0)
    k_max = max(ks)
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg") for k in ks}
    parts: dict[str, list[np.ndarray]] = {key: [] for key in sums}
    step = chunk_users(batch_users, n_items, max_scores)
    batches = range(0, len(users), step)
    with torch.no_grad(), progress_bar("evaluate", len(batches), enabled=progress) as bar:
        for start in batches:
            bar.advance(1)
            ub = users[start:start + step]
            scores = user_emb[torch.from_numpy(ub).to(device)] @ item_emb.T
            if m_groups:  # every masked pair of the chunk in one copy and one write
                cells = [_rows_cols(ub, ptr, items) for ptr, items in m_groups]
                rows, cols = (torch.from_numpy(np.concatenate(part).astype(np.int64)).to(device)
                              for part in zip(*cells))
                scores[rows, cols] = -torch.inf
            top = torch.topk(scores, k_max, dim=1).indices.cpu().numpy()
            truth_mask = np.zeros((len(ub), n_items), dtype=bool)
            rows, cols = _rows_cols(ub, t_ptr, t_items)
            truth_mask[rows, cols] = True
            hits = np.take_along_axis(truth_mask, top, axis=1)
            metrics = ranking_metrics(hits, truth_mask.sum(axis=1), ks)
            for key, values in metrics.items():
                sums[key] += float(values.sum())
                parts[key].append(np.asarray(values, dtype=np.float64))
    if per_user is not None:
        per_user["users"] = users
        per_user.update({k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()})
    n = max(1, len(users))
    return {key: value / n for key, value in sums.items()}


def _rows_cols(users: np.ndarray, ptr: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = ptr[users + 1] - ptr[users]
    rows = np.repeat(np.arange(len(users)), counts)
    cols = np.concatenate([items[ptr[u]:ptr[u + 1]] for u in users]) if len(users) else np.empty(0, int)
    return rows, cols


def score_percentiles(user_emb: torch.Tensor, item_emb: torch.Tensor, pairs: np.ndarray, *,
                      batch_users: int = 1024) -> np.ndarray:
    """Where each (user, item) pair stands in its user's scores over every item: the share of
    the user's items scoring strictly lower, plus half of those tied (1 is the user's top item,
    0 the bottom; a random item averages 0.5). Nothing is masked: a training item ranks among
    all items, as a score reader sees it. Returns ``(len(pairs),)`` floats.

    >>> u = torch.tensor([[1.0], [-1.0]]); i = torch.tensor([[0.0], [1.0], [2.0]])
    >>> score_percentiles(u, i, np.array([[0, 2], [0, 0], [1, 0]])).round(3).tolist()
    [1.0, 0.0, 1.0]
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), dtype=np.float64)
    if not len(pairs):
        return out
    n_items = item_emb.shape[0]
    step = chunk_users(batch_users, n_items)
    order = np.argsort(pairs[:, 0], kind="stable")
    users = np.unique(pairs[:, 0])
    with torch.no_grad():
        for start in range(0, len(users), step):
            chunk = users[start:start + step]
            scores = user_emb[torch.as_tensor(chunk, device=user_emb.device)] @ item_emb.T
            sel = order[np.isin(pairs[order, 0], chunk)]
            row = torch.as_tensor(np.searchsorted(chunk, pairs[sel, 0]), device=scores.device)
            mine = scores[row, torch.as_tensor(pairs[sel, 1], device=scores.device)].unsqueeze(1)
            rows = scores[row]
            lower = (rows < mine).sum(1).double()
            tied = (rows == mine).sum(1).double() - 1  # the pair itself is not tied with itself
            out[sel] = ((lower + 0.5 * tied) / max(1, n_items - 1)).cpu().numpy()
    return out
