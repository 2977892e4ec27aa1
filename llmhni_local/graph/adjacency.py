"""The normalised user-item adjacency as a torch CSR tensor, and symmetric propagation.

Nodes are users ``0 .. U-1`` followed by items ``U .. U+I-1``. The adjacency
``A_hat = D^{-1/2} A D^{-1/2}`` of the bipartite graph is symmetric, so the gradient of
``A_hat @ X`` with respect to ``X`` is ``A_hat @ G``: :class:`SymmetricPropagate` uses that to
avoid the sparse transpose autograd would otherwise build on every backward pass. This CSR
path is several times faster per epoch than a COO ``edge_index`` (measured ratios:
docs/BENCHMARKS.md, "Trainer parity and speed" and "PyG backbones"; the choice:
docs/DESIGN.md, Trainer).

The tensor is built on the CPU (scipy and numpy, so seeded CPU runs keep their exact values)
and moved with ``.to(device)``; propagation then runs where the tensor is: on CUDA,
``torch.sparse.mm`` of a CSR tensor and a dense matrix is cuSPARSE's SpMM, forward and (being
the same product) backward.

Degrees, coalescing and the CSR tensor come from ``torch_geometric.utils``;
:func:`bipartite_edge_index` gives the same graph in PyG's COO form, and
:func:`normalized_adjacency` takes one (docs/DESIGN.md, "What we use from PyG").
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
    # scipy sorts and sums duplicates about 5x faster than PyG's coalesce (torch.sort on CPU;
    # docs/DESIGN.md, "What we use from PyG"), and views are rebuilt every epoch.
    adj = sp.coo_matrix((np.concatenate([w, w]), (rows, cols)), shape=(n, n)).tocsr()
    adj.sum_duplicates()
    adj.sort_indices()
    row = np.repeat(np.arange(n, dtype=np.int64), np.diff(adj.indptr))
    edge_index = torch.from_numpy(np.stack([row, adj.indices.astype(np.int64)]))
    return normalized_adjacency(edge_index, torch.from_numpy(adj.data), n, is_coalesced=True)


def normalized_adjacency(edge_index: torch.Tensor, edge_weight: torch.Tensor | None,
                         num_nodes: int, *, is_coalesced: bool = False) -> torch.Tensor:
    """``D^{-1/2} A D^{-1/2}`` of an undirected graph given as PyG's ``edge_index``.

    Args:
        edge_index: ``(2, E)`` COO indices holding both directions of every edge (as
            ``torch_geometric.utils.to_undirected`` gives them).
        edge_weight: ``(E,)`` weights, or None for 1 per edge.
        num_nodes: number of nodes.
        is_coalesced: ``edge_index`` is already sorted by (row, column) without duplicates;
            otherwise PyG's ``coalesce`` sorts it and sums duplicates. (default: ``False``)

    Returns:
        ``(N, N)`` float32 ``torch.sparse_csr`` tensor on ``edge_index``'s device (built on
        the CPU); :func:`propagate` needs it symmetric.

    >>> normalized_adjacency(torch.tensor([[0, 1], [1, 0]]), None, 3).to_dense().tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    from torch_geometric.utils import coalesce, scatter, to_torch_csr_tensor

    device = edge_index.device
    edge_index = edge_index.cpu()  # the normalisation below is numpy's (see inv_sqrt)
    w = (torch.ones(edge_index.size(1)) if edge_weight is None else edge_weight.cpu()).float()
    if not is_coalesced:
        edge_index, w = coalesce(edge_index, w, num_nodes, reduce="sum")
    row, col = edge_index
    deg = scatter(w, row, dim=0, dim_size=num_nodes, reduce="sum").numpy()
    # numpy's float32 power, not torch's pow (which rounds 1/sqrt differently in the last
    # bit for about a third of degrees), so seeded runs keep their exact adjacency values.
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    # Gathered in numpy: the same float32 products, without torch's thread start-up per op.
    values = inv_sqrt[row.numpy()] * w.numpy() * inv_sqrt[col.numpy()]
    with warnings.catch_warnings():  # torch flags CSR as "beta" on every construction
        warnings.simplefilter("ignore", UserWarning)
        return to_torch_csr_tensor(edge_index, torch.from_numpy(values),
                                   size=(num_nodes, num_nodes), is_coalesced=True).to(device)


def bipartite_edge_index(edges: np.ndarray, n_users: int,
                         weight: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The user-item graph in PyG's form: an undirected COO ``edge_index`` and edge weights.

    Items are numbered after the users; each pair appears in both directions, duplicates are
    summed and edges sorted by (row, column) (``torch_geometric.utils.to_undirected``).

    Args:
        edges: ``(E, 2)`` array of (user, item) pairs.
        n_users: number of users (the offset of item nodes).
        weight: optional per-edge weight. (default: 1 per edge)

    Returns:
        ``(edge_index (2, E'), edge_weight (E',))``, int64 and float32.

    >>> ei, w = bipartite_edge_index(np.array([[0, 0], [1, 0]]), 2)
    >>> ei.tolist(), w.tolist()
    ([[0, 1, 2, 2], [2, 2, 0, 1]], [1.0, 1.0, 1.0, 1.0])
    """
    from torch_geometric.utils import to_undirected

    pairs = torch.as_tensor(np.asarray(edges, dtype=np.int64).reshape(-1, 2))
    w = (torch.ones(len(pairs)) if weight is None
         else torch.as_tensor(np.asarray(weight, np.float32)))
    return to_undirected(torch.stack([pairs[:, 0], pairs[:, 1] + n_users]), w, reduce="sum")


class SymmetricPropagate(torch.autograd.Function):
    """``A @ X`` for a fixed symmetric sparse ``A``; backward is ``A @ grad`` (no transpose).

    ``A`` and ``X`` on the same device, CPU or CUDA: ``torch.sparse.mm`` of a CSR tensor and a
    dense one is supported on both, so the function needs no device branch. On CUDA the
    product may sum a row in another order from run to run (docs/DESIGN.md, Trainer).
    """

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
