"""Objective alignment (docs/METHOD.md stage 3): an MLP ``f`` maps the frozen text embeddings
``x`` into a space aligned with the recommendation task, ``z' = f(x)``.

``f`` is trained with InfoNCE on pseudo-labels: for each user, the top-N of the user's
*interacted training* items by ``cos(x_u, x_i)`` are positives (:func:`pseudo_labels`); the
other items of the batch are the negatives. Only training pairs are read, never validation or
test ones.

The no-alignment ablation uses the raw ``x`` instead (:func:`similarity_vectors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmhni_local.core.device import one_cpu_thread, resolve_device
from llmhni_local.core.errors import DataError
from llmhni_local.llmhni.settings import AlignSettings, LLMHNISettings

if TYPE_CHECKING:  # torch is imported where it is used, so importing this module stays cheap
    import torch


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _check_inputs(x_user: np.ndarray, x_item: np.ndarray, train_pairs: np.ndarray) -> np.ndarray:
    if x_user.ndim != 2 or x_item.ndim != 2 or x_user.shape[1] != x_item.shape[1]:
        raise DataError(f"alignment: user vectors {x_user.shape} and item vectors "
                        f"{x_item.shape} must be 2-D with the same width")
    pairs = np.asarray(train_pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= len(x_user)
                       or pairs[:, 1].min() < 0 or pairs[:, 1].max() >= len(x_item)):
        raise DataError(f"alignment: a training pair indexes outside the {len(x_user)} user / "
                        f"{len(x_item)} item vectors")
    if not (np.isfinite(x_user).all() and np.isfinite(x_item).all()):
        raise DataError("alignment: the text embeddings hold non-finite values")
    return pairs


def pseudo_labels(x_user: np.ndarray, x_item: np.ndarray, train_pairs: np.ndarray,
                  n: int) -> np.ndarray:
    """Each user's ``n`` interacted items most similar to the user by raw cosine.

    Args:
        x_user: ``(U, d)`` user text embeddings.
        x_item: ``(I, d)`` item text embeddings.
        train_pairs: ``(E, 2)`` training (user, item) pairs (duplicates count once).
        n: items per user (all of them when the user has fewer).

    Returns:
        ``(P, 2)`` int64 (user, item) pairs, sorted by user, then by decreasing cosine (ties:
        lower item index first).

    Example:
        >>> xu = np.array([[1.0, 0.0]])
        >>> xi = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> pseudo_labels(xu, xi, np.array([[0, 1], [0, 2], [0, 0]]), 2).tolist()
        [[0, 0], [0, 2]]
    """
    pairs = _check_inputs(np.asarray(x_user), np.asarray(x_item), train_pairs)
    pairs = np.unique(pairs, axis=0)
    if n <= 0 or not len(pairs):
        return np.empty((0, 2), dtype=np.int64)
    cos = (_unit_rows(x_user)[pairs[:, 0]] * _unit_rows(x_item)[pairs[:, 1]]).sum(1)
    order = np.lexsort((pairs[:, 1], -cos, pairs[:, 0]))
    pairs = pairs[order]
    starts = np.searchsorted(pairs[:, 0], pairs[:, 0], side="left")
    rank = np.arange(len(pairs)) - starts
    return pairs[rank < n]


def batch_positive_mask(member, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``mask[k, j]``: the pair ``(users[k], items[j])`` is a pseudo-label and ``j != k``, so
    item ``j`` must not serve as a negative of row ``k``.

    Args:
        member: ``(U, I)`` dense bool array or scipy CSR matrix, set at the pseudo-label pairs.
        users: ``(B,)`` the batch's users.
        items: ``(B,)`` the batch's items.

    Example:
        >>> import scipy.sparse as sp
        >>> m = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 1]]))
        >>> batch_positive_mask(m, np.array([0, 0, 1]), np.array([0, 1, 2])).astype(int).tolist()
        [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    """
    if isinstance(member, np.ndarray):  # dense (U, I) bool: plain fancy indexing, fast
        mask = member[users[:, None], items[None, :]]
    else:
        mask = member[users][:, items].toarray() > 0
    np.fill_diagonal(mask, False)
    return mask


def build_mlp(in_dim: int, settings: AlignSettings):
    """The alignment network ``f``: Linear -> GELU -> Linear."""
    from torch import nn

    return nn.Sequential(nn.Linear(in_dim, settings.hidden), nn.GELU(),
                         nn.Linear(settings.hidden, settings.out_dim))


def _membership(labels: np.ndarray, n_users: int, n_items: int):
    """Which (user, item) pairs are pseudo-labels: a dense bool table where it fits (far
    faster per batch), a sparse matrix otherwise."""
    import scipy.sparse as sp

    member = sp.csr_matrix((np.ones(len(labels), dtype=np.int8), (labels[:, 0], labels[:, 1])),
                           shape=(n_users, n_items))
    return member.toarray() > 0 if n_users * n_items <= 200_000_000 else member


def train_alignment(x_user: np.ndarray, x_item: np.ndarray, train_pairs: np.ndarray,
                    settings: AlignSettings | LLMHNISettings, seed: int, *,
                    device: str | torch.device = "cpu"
                    ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Train ``f`` on the pseudo-labels and return the aligned vectors.

    The loss is the symmetric InfoNCE of a batch of pseudo-label pairs ``(u_k, i_k)``:
    ``logits[k, j] = cos(f(x_{u_k}), f(x_{i_j})) / temperature``, cross-entropy towards the
    diagonal over rows (user -> items) and over columns (item -> users), averaged. An entry
    whose pair ``(u_k, i_j)`` is itself a pseudo-label (same user twice in the batch, or the
    same item) is masked out of the negatives, so no positive is pushed away.

    Args:
        x_user: ``(U, d)`` user text embeddings.
        x_item: ``(I, d)`` item text embeddings.
        train_pairs: ``(E, 2)`` training (user, item) pairs.
        settings: :class:`AlignSettings` (or :class:`LLMHNISettings`, whose ``align`` is read).
        seed: seeds the MLP's initialisation and the batch order (torch's global generator is
            left as it was). On the CPU ``f`` trains on one thread, so a seed gives the same
            vectors bit for bit whatever the thread count or the load on the machine.
        device: where ``f`` trains: a ``train.device`` spelling or a resolved device. The MLP
            is initialised on the CPU and the batch order and masks come from numpy, so a CUDA
            run starts from the same weights and sees the same batches. (default: ``"cpu"``,
            today's figures)

    Returns:
        ``(z_user, z_item, history)``: ``(U, out_dim)`` and ``(I, out_dim)`` float32 unit
        vectors, and one row per epoch ``{"epoch", "loss", "pos_cos", "rand_cos"}`` where
        ``pos_cos`` is the mean aligned cosine of the pseudo-label pairs and ``rand_cos`` that
        of as many random user-item pairs (the gap shows the alignment working).
    """
    import torch

    dev = resolve_device(device)
    s = settings.align if isinstance(settings, LLMHNISettings) else settings
    x_user = np.asarray(x_user, dtype=np.float32)
    x_item = np.asarray(x_item, dtype=np.float32)
    labels = pseudo_labels(x_user, x_item, train_pairs, s.n_pseudo)
    if len(labels) < 2:
        raise DataError(f"alignment: {len(labels)} pseudo-label pair(s); at least 2 are needed "
                        "(are there training interactions?)")
    n_users, n_items = len(x_user), len(x_item)
    member = _membership(labels, n_users, n_items)
    rng = np.random.default_rng(seed)
    rand_pairs = np.stack([rng.integers(0, n_users, len(labels)),
                           rng.integers(0, n_items, len(labels))], 1)
    xu_t, xi_t = torch.from_numpy(x_user).to(dev), torch.from_numpy(x_item).to(dev)
    history: list[dict] = []
    with torch.random.fork_rng(devices=[]), one_cpu_thread(dev):
        torch.manual_seed(seed)
        f = build_mlp(x_user.shape[1], s).to(dev)
        opt = torch.optim.Adam(f.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        for epoch in range(1, s.epochs + 1):
            f.train()
            order = rng.permutation(len(labels))
            total, n_batches = 0.0, 0
            for start in range(0, len(order), s.batch_size):
                batch = labels[order[start:start + s.batch_size]]
                if len(batch) < 2:  # a lone last pair has no in-batch negative
                    continue
                loss = _batch_loss(f, xu_t, xi_t, batch, member, s.temperature, dev)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                n_batches += 1
            z_user, z_item = _embed(f, xu_t, xi_t)
            history.append({
                "epoch": epoch, "loss": total / max(1, n_batches),
                "pos_cos": float((z_user[labels[:, 0]] * z_item[labels[:, 1]]).sum(1).mean()),
                "rand_cos": float((z_user[rand_pairs[:, 0]] * z_item[rand_pairs[:, 1]]).sum(1).mean()),
            })
    return z_user, z_item, history


def _batch_loss(f, xu_t, xi_t, batch: np.ndarray, member, temperature: float, dev):
    """The symmetric InfoNCE of one batch of pseudo-label pairs (see :func:`train_alignment`)."""
    import torch
    import torch.nn.functional as F

    u, i = batch[:, 0], batch[:, 1]
    # f on each distinct node once (a batch repeats users and items).
    uu, u_inv = np.unique(u, return_inverse=True)
    ii, i_inv = np.unique(i, return_inverse=True)
    zu = F.normalize(f(xu_t[torch.from_numpy(uu).to(dev)]), dim=1)[
        torch.from_numpy(u_inv).to(dev)]
    zi = F.normalize(f(xi_t[torch.from_numpy(ii).to(dev)]), dim=1)[
        torch.from_numpy(i_inv).to(dev)]
    logits = zu @ zi.T / temperature
    other_pos = torch.from_numpy(batch_positive_mask(member, u, i)).to(dev)
    logits = logits.masked_fill(other_pos, float("-inf"))
    target = torch.arange(len(batch), device=dev)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _embed(f, xu_t, xi_t) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as F

    f.eval()
    with torch.no_grad():
        return (F.normalize(f(xu_t), dim=1).cpu().numpy().astype(np.float32),
                F.normalize(f(xi_t), dim=1).cpu().numpy().astype(np.float32))


def similarity_vectors(x_user: np.ndarray, x_item: np.ndarray, train_pairs: np.ndarray,
                       settings: LLMHNISettings, seed: int, *,
                       device: str | torch.device = "cpu"
                       ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The vectors the negative sampler measures similarity with: the aligned ``z'`` when
    ``settings.alignment`` is on (``f`` trained on ``device``, see :func:`train_alignment`),
    else the raw embeddings ``x`` scaled to unit length (ablation "without alignment";
    history is then empty)."""
    if settings.alignment:
        return train_alignment(x_user, x_item, train_pairs, settings.align, seed, device=device)
    _check_inputs(np.asarray(x_user), np.asarray(x_item), train_pairs)
    return _unit_rows(x_user), _unit_rows(x_item), []
