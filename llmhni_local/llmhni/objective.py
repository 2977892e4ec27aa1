r"""The combined LLMHNI objective (docs/METHOD.md stage 8), in the trainer's objective interface
(:class:`llmhni_local.train.objectives.RecObjective` is the plain counterpart).

.. math::
    L = L_{rec} + \lambda_{de} L_{de} + \lambda_{hal} L_{hal} + l_2 \cdot L2

* ``L_rec``: BPR on G' (the positives are G' edges) with the semantic-guided negative chosen
  from the sampler's ``(B, M)`` pool by the current scores (:mod:`.negatives`); given a 1-D
  negative, plain BPR.
* ``L_de``: InfoNCE between each batch node's representation propagated on G and on G'
  (the batch's distinct users, and its distinct positive items; same node = positive).
* ``L_hal``: InfoNCE between a node's representation on an edge-dropped view of G and on one
  of G' (drop rate rho, views redrawn every epoch). With ``denoise`` off (G' = G) this is
  SGL's edge-drop contrast.
* ``L2``: ``losses.l2_penalty`` of the batch's layer-0 user, positive and negative embeddings.

The two contrastive weights rise linearly from 0 over ``contrast_warmup`` epochs
(:attr:`LLMHNIObjective.contrast_scale`); both terms are still computed (and reported) then.

Everything is built on the CPU, as seeded CPU runs always were, and :meth:`LLMHNIObjective.to`
moves the graphs, the similarity vectors, table and thresholds to the training device; the
candidate pools are drawn on the CPU and reach the device with the batch.

A part that is off (weight 0 or switch off) is not computed and its key is absent from the
batch's parts. :meth:`LLMHNIObjective.start_epoch` always takes exactly one number from the
trainer's generator, whatever is switched on, so every ablation sees the same batches and
candidate pools.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmhni_local.core.config import TrainSettings
from llmhni_local.core.errors import ConfigError, DataError
from llmhni_local.graph.adjacency import bipartite_adjacency
from llmhni_local.graph.dropout import dropout_edge
from llmhni_local.llmhni.negatives import SemanticNegatives, select_negatives, user_thresholds
from llmhni_local.llmhni.settings import LLMHNISettings
from llmhni_local.train import losses
from llmhni_local.train.objectives import BatchLoss

#: Largest users x items similarity table kept in memory (float32: 4 bytes each).
SIM_TABLE_MAX = 25_000_000


class LLMHNIObjective:
    """LLMHNI's loss on G and G'.

    Args:
        edges_G: ``(E, 2)`` training pairs, the graph G.
        edges_Gprime: ``(E', 2)`` edges of G' (:func:`llmhni_local.llmhni.denoise.denoised_edges`);
            ignored (G' = G) when ``settings.denoise`` is off.
        n_users: number of users.
        n_items: number of items.
        train_settings: the ``[train]`` settings (only ``l2`` is read here).
        settings: the ``[llmhni]`` settings.
        z_user: ``(U, d)`` vectors the similarity is measured with (aligned ``z'``, or raw
            ``x`` for the no-alignment ablation; see
            :func:`llmhni_local.llmhni.align.similarity_vectors`). Needed when
            ``settings.semantic_negatives`` is on.
        z_item: ``(I, d)`` item vectors, same space.

    Use :meth:`make_sampler` as the trainer's sampler, so ``neg`` is a ``(B, M)`` pool.
    """

    def __init__(self, edges_G: np.ndarray, edges_Gprime: np.ndarray, n_users: int, n_items: int,
                 train_settings: TrainSettings, settings: LLMHNISettings,
                 z_user: np.ndarray | None = None, z_item: np.ndarray | None = None) -> None:
        self.n_users, self.n_items = n_users, n_items
        self.train_settings, self.settings = train_settings, settings
        self.edges_G = np.asarray(edges_G, dtype=np.int64).reshape(-1, 2)
        self.edges_Gprime = (np.asarray(edges_Gprime, dtype=np.int64).reshape(-1, 2)
                             if settings.denoise else self.edges_G)
        self.adj_G = bipartite_adjacency(self.edges_G, n_users, n_items)
        self.adj_Gprime = (bipartite_adjacency(self.edges_Gprime, n_users, n_items)
                           if settings.denoise else self.adj_G)
        self.z_user = self.z_item = self.thresholds = self.sim_table = None
        if settings.semantic_negatives:
            if z_user is None or z_item is None:
                raise ConfigError("llmhni.semantic_negatives is on but no similarity vectors "
                                  "were given (z_user, z_item)")
            zu = F.normalize(torch.as_tensor(np.asarray(z_user), dtype=torch.float32), dim=1)
            zi = F.normalize(torch.as_tensor(np.asarray(z_item), dtype=torch.float32), dim=1)
            if zu.shape[0] != n_users or zi.shape[0] != n_items or zu.shape[1] != zi.shape[1]:
                raise DataError(f"similarity vectors {tuple(zu.shape)} / {tuple(zi.shape)} do not "
                                f"match {n_users} users x {n_items} items")
            self.z_user, self.z_item = zu, zi
            # The whole user x item similarity table when it is small (MovieLens-100K: 6 MB),
            # so a batch only gathers from it; else computed per batch from the vectors.
            self.sim_table = zu @ zi.T if n_users * n_items <= SIM_TABLE_MAX else None
            if settings.similarity_rule == "threshold":
                e = torch.from_numpy(self.edges_Gprime)
                sims = (zu[e[:, 0]] * zi[e[:, 1]]).sum(1).numpy()
                self.thresholds = torch.as_tensor(user_thresholds(
                    self.edges_Gprime[:, 0], sims, n_users, settings.threshold_quantile),
                    dtype=torch.float32)
        self.view_edges: tuple[np.ndarray, np.ndarray] | None = None
        self.views: tuple[torch.Tensor, torch.Tensor] | None = None
        self.epoch = 0
        self.device = torch.device("cpu")

    def parameters(self) -> list[torch.nn.Parameter]:
        """No weights of its own: the trainer's optimiser updates the model's alone."""
        return []

    def to(self, device: torch.device | str) -> LLMHNIObjective:
        """Move G, G', the views and the similarity tensors to ``device``; later views follow."""
        self.device = dev = torch.device(device)
        same = self.adj_Gprime is self.adj_G  # denoise off: one graph, kept as one
        self.adj_G = self.adj_G.to(dev)
        self.adj_Gprime = self.adj_G if same else self.adj_Gprime.to(dev)
        if self.views is not None:
            self.views = tuple(v.to(dev) for v in self.views)  # type: ignore[assignment]
        for name in ("z_user", "z_item", "sim_table", "thresholds"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(dev))
        return self

    # ------------------------------------------------------------------ trainer interface
    @property
    def positives(self) -> np.ndarray:
        """The pairs L_rec trains on: the edges of G'."""
        return self.edges_Gprime

    def make_sampler(self) -> SemanticNegatives:
        """Pools of ``pool_size`` uniform negatives (1 with semantic negatives off), never an
        edge of G or of G'."""
        m = self.settings.pool_size if self.settings.semantic_negatives else 1
        return SemanticNegatives(np.concatenate([self.edges_G, self.edges_Gprime]), self.n_items, m)

    @property
    def contrast_scale(self) -> float:
        """Share of ``lambda_de`` / ``lambda_hal`` used this epoch (``contrast_warmup``)."""
        return losses.warmup_scale(self.epoch, self.settings.contrast_warmup)

    def start_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        self.epoch = epoch
        # One draw whatever is switched on: ablations keep the trainer's sampling stream.
        view_rng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
        if self.settings.hal_on:
            rho = self.settings.rho
            self.view_edges = (dropout_edge(self.edges_G, rho, view_rng)[0],
                               dropout_edge(self.edges_Gprime, rho, view_rng)[0])
            self.views = tuple(  # type: ignore[assignment]
                bipartite_adjacency(e, self.n_users, self.n_items).to(self.device)
                for e in self.view_edges)

    def eval_adj(self) -> torch.Tensor:
        """Evaluation propagates over G'."""
        return self.adj_Gprime

    # ------------------------------------------------------------------ the loss
    def choose_negatives(self, users: torch.Tensor, pool: torch.Tensor,
                         item_emb: torch.Tensor, user_emb: torch.Tensor):
        """The semantic-guided choice over a ``(B, M)`` pool: ``(neg (B,), selection)``;
        ``selection`` is None when semantic negatives are off (column 0 is taken)."""
        s = self.settings
        if not s.semantic_negatives:
            return pool[:, 0], None
        with torch.no_grad():
            scores = (user_emb[users].unsqueeze(1) * item_emb[pool]).sum(-1)
            if self.sim_table is not None:
                sim = self.sim_table[users.unsqueeze(1), pool]
            else:
                sim = (self.z_user[users].unsqueeze(1) * self.z_item[pool]).sum(-1)
        sel = select_negatives(scores, sim, rule=s.similarity_rule,
                               threshold=None if self.thresholds is None else self.thresholds[users],
                               beta=s.beta)
        return pool.gather(1, sel.chosen.unsqueeze(1)).squeeze(1), sel

    def __call__(self, model, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> BatchLoss:
        s = self.settings
        u_emb, i_emb = model(self.adj_Gprime)
        parts: dict[str, float] = {}
        if neg.ndim == 2:
            neg, sel = self.choose_negatives(users, neg, i_emb, u_emb)
            if sel is not None:
                parts["false_negatives_flagged"] = float(sel.flagged.sum())
                parts["fallback_rows"] = float(sel.fallback.sum())
        eu = u_emb[users]
        rec = losses.bpr((eu * i_emb[pos]).sum(-1), (eu * i_emb[neg]).sum(-1)).mean()
        e_u, e_i = model.ego(users, pos)
        _, e_j = model.ego(users, neg)
        reg = self.train_settings.l2 * losses.l2_penalty(e_u, e_i, e_j)
        total = rec + reg
        parts["rec"] = float(rec.detach())
        parts["l2"] = float(reg.detach())
        uu, ii = torch.unique(users), torch.unique(pos)
        if s.de_on:
            u_g, i_g = model(self.adj_G)
            de = (losses.info_nce(u_g[uu], u_emb[uu], s.tau)
                  + losses.info_nce(i_g[ii], i_emb[ii], s.tau))
            total = total + self.contrast_scale * s.lambda_de * de
            parts["de"] = float(de.detach())
        if s.hal_on:
            if self.views is None:
                raise RuntimeError("LLMHNIObjective: start_epoch was not called before the loss")
            u1, i1 = model(self.views[0])
            u2, i2 = model(self.views[1])
            hal = losses.info_nce(u1[uu], u2[uu], s.tau) + losses.info_nce(i1[ii], i2[ii], s.tau)
            total = total + self.contrast_scale * s.lambda_hal * hal
            parts["hal"] = float(hal.detach())
        return BatchLoss(total, parts)
