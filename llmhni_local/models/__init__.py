"""Graph recommenders: LightGCN and NGCF over a sparse CSR adjacency, and any PyG model
through :class:`PyGBackbone`; all are backbones (:class:`Backbone`) the trainer accepts."""

from llmhni_local.models.backbone import Backbone
from llmhni_local.models.lightgcn import LightGCN
from llmhni_local.models.ngcf import NGCF
from llmhni_local.models.pyg import PyGBackbone, pyg_lightgcn

__all__ = ["Backbone", "LightGCN", "NGCF", "PyGBackbone", "build_model", "pyg_lightgcn"]


def build_model(name: str, n_users: int, n_items: int, dim: int, layers: int,
                dropout: float = 0.1, init: str = "normal", init_std: float = 0.1):
    """The backbone named in ``ModelSettings.name``, its embeddings initialised by ``init``."""
    from torch import nn

    if name == "lightgcn":
        model = LightGCN(n_users, n_items, dim, layers)
    elif name == "ngcf":
        model = NGCF(n_users, n_items, dim, layers, dropout=dropout)
    else:
        raise ValueError(f"unknown model {name!r}")
    if init == "normal":
        nn.init.normal_(model.embedding.weight, std=init_std)
    elif init != "xavier":  # the modules initialise with Xavier themselves
        raise ValueError(f"unknown init {init!r}")
    return model
