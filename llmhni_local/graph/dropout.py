"""Edge dropout of the user-item graph (the views of SGL and of LLMHNI's L_hal).

:func:`dropout_edge` follows ``torch_geometric.utils.dropout_edge(edge_index, p,
force_undirected=True, training)``: each undirected user-item edge is kept with probability
``1 - p``, both directions together, and the call returns ``(result, mask)`` and does nothing
when ``training=False``. The one difference is where the coins come from: a numpy
``Generator`` that the caller seeds, not torch's global generator, which also initialises the
model and draws NGCF's message dropout; a view then depends only on its own seed, and seeded
runs keep the views they had (docs/DESIGN.md, "What we use from PyG").
"""

from __future__ import annotations

import numpy as np


def dropout_edge(edges: np.ndarray, p: float, rng: np.random.Generator, *,
                 training: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Keep each (user, item) edge, in both directions, with probability ``1 - p``.

    Args:
        edges: ``(E, 2)`` array of (user, item) pairs; each row is one undirected edge.
        p: drop probability, in ``[0, 1]``.
        rng: the generator the ``E`` uniform draws come from (none are drawn when nothing
            is dropped).
        training: when False nothing is dropped. (default: ``True``)

    Returns:
        ``(kept_edges, keep_mask)``: ``kept_edges == edges[keep_mask]``; with
        ``training=False`` or ``p=0`` the input itself and an all-True mask.

    >>> kept, mask = dropout_edge(np.array([[0, 0], [1, 1]]), 0.0, np.random.default_rng(0))
    >>> mask.tolist()
    [True, True]
    >>> kept, mask = dropout_edge(np.array([[0, 0], [1, 1]]), 1.0, np.random.default_rng(0))
    >>> kept.shape, mask.tolist()
    ((0, 2), [False, False])
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"edge dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return edges, np.ones(len(edges), dtype=bool)
    mask = rng.random(len(edges)) >= p
    return edges[mask], mask
