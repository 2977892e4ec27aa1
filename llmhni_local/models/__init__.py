"""Graph recommenders: LightGCN and NGCF over a sparse CSR adjacency."""

from llmhni_local.models.lightgcn import LightGCN
from llmhni_local.models.ngcf import NGCF

__all__ = ["LightGCN", "NGCF", "build_model"]


def build_model(name: str, n_users: int, n_items: int, dim: int, layers: int,
                dropout: float = 0.1):
    """The backbone named in ``ModelSettings.name``."""
    if name == "lightgcn":
        return LightGCN(n_users, n_items, dim, layers)
    if name == "ngcf":
        return NGCF(n_users, n_items, dim, layers, dropout=dropout)
    raise ValueError(f"unknown model {name!r}")
