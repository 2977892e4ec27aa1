"""The normalised user-item adjacency as a torch CSR tensor, and symmetric propagation.

Nodes are users ``0 .. U-1`` followed by items ``U .. U+I-1``. The adjacency
``A_hat = D^{-1/2} A D^{-1/2}`` of the bipartite graph is symmetric, so the gradient of
``A_hat @ X`` with respect to ``X`` is ``A_hat @ G``: :class:`SymmetricPropagate` uses that to
avoid the sparse transpose autograd would otherwise build on every backward pass. This CSR
path is several times faster per epoch than a COO ``edge_index`` (measured ratios:
docs/BENCHMARKS.md, "Trainer parity and speed"; the choice: docs/DESIGN.md, Trainer).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def bipartite_adjacency(edges: np.ndarray, n_users: int, n_items: int,
                        weight: np.ndarray | None = None) -> torch.Tensor:
    """Symmetrically normalised adjacency of the user-item graph, as a CSR tensor.

    Args:
        edges: ``(E, 2)`` array of (user, item) pairs; duplicates are summed.
        n_users: number of users.
        n_items: number of items.
        weight: optional per-edge weight (default 1); degrees are weighted sums, so a
            reweighted or denoised graph goes straight in.

    Returns:
        ``(U+I, U+I)`` float32 ``torch.sparse_csr`` tensor ``D^{-1/2} A D^{-1/2}``; nodes with
        no edge get a zero row.
    """
    import scipy.sparse as sp

    n = n_users + n_items
    w = np.ones(len(edges), dtype=np.float32) if weight is None else np.asarray(weight, np.float32)
    rows = np.concatenate([edges[:, 0], edges[:, 1] + n_users])
    cols = np.concatenate([edges[:, 1] + n_users, edges[:, 0]])
    vals = np.concatenate([w, w])
    adj = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    adj.sum_duplicates()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    adj = sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt)
    adj = adj.tocsr()
    adj.sort_indices()
    with warnings.catch_warnings():  # torch flags CSR as "beta" on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(adj.indptr.astype(np.int64)),
            torch.from_numpy(adj.indices.astype(np.int64)),
            torch.from_numpy(adj.data.astype(np.float32)),
            size=(n, n),
            check_invariants=False,  # scipy built it sorted and coalesced
        )


class SymmetricPropagate(torch.autograd.Function):
    """``A @ X`` for a fixed symmetric sparse ``A``; backward is ``A @ grad`` (no transpose)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, torch.sparse.mm(ctx.adj, grad)


def propagate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One propagation step ``adj @ x`` over a symmetric normalised adjacency."""
    return SymmetricPropagate.apply(adj, x)


def drop_edges(edges: np.ndarray, rate: float, rng: np.random.Generator,
               training: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Keep each edge with probability ``1 - rate``.

    Returns ``(kept_edges, keep_mask)``; with ``training=False`` or ``rate=0`` every edge is
    kept (the input is returned unchanged).

    >>> kept, mask = drop_edges(np.array([[0, 0], [1, 1]]), 0.0, np.random.default_rng(0))
    >>> mask.tolist()
    [True, True]
    """
    if not training or rate <= 0.0:
        return edges, np.ones(len(edges), dtype=bool)
    mask = rng.random(len(edges)) >= rate
    return edges[mask], mask
