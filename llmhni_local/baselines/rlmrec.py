r"""RLMRec-Con and RLMRec-Gen: how much does aligning the collaborative embeddings with fixed
profile (semantic) embeddings help a graph recommender?

Ren, X., Wei, W., Xia, L., Su, L., Cheng, S., Wang, J., Yin, D., Huang, C., "Representation
Learning with Large Language Models for Recommendation", WWW 2024, arXiv 2310.15950. The
mechanisms, MLP shapes and defaults follow the authors' released code (github HKUDS/RLMRec,
``encoder/models/general_cf/lightgcn_plus.py`` and ``lightgcn_gene.py``, with
``encoder/models/loss_utils.py`` and ``aug_utils.py``; defaults from the ``amazon`` blocks of
``encoder/config/modelconf/lightgcn_plus.yml`` and ``lightgcn_gene.yml``).
Their LightGCN (dim 32) on Amazon-book: Recall@20 0.1483 with Con, 0.1446 with Gen.

Both add one term to BPR + L2 (as :class:`llmhni_local.train.objectives.RecObjective`
computes them); ``e`` is a node's final (propagated) embedding, ``s`` its profile embedding,
``cos`` the cosine and ``tau`` a temperature.

**RLMRec-Con** (contrastive). An MLP ``f`` maps profiles into the CF space
(``d_s -> (d_s + D) // 2 -> D``, LeakyReLU, ``D = model.out_dim``); for a batch of ``B``
(user, positive, negative) triples

.. math::
    L_{kd} = \frac{1}{B}\sum_b \Big[-\log\frac{e^{\cos(e_{u_b}, f(s_{u_b}))/\tau}}
             {\sum_{v \in \mathcal{U}} e^{\cos(e_{u_b}, f(s_v))/\tau}}\Big]
           + \mathrm{NCE}(e_{pos}, f(s_{pos})) + \mathrm{NCE}(e_{neg}, f(s_{neg}))

where the user term's negatives are *all* users' mapped profiles and the two item terms are
in-batch InfoNCE (:func:`llmhni_local.train.losses.info_nce`; duplicates in the batch are
each a term and each a negative), as in the authors' code;
``L = L_{BPR} + l_2 L2 + kd\_weight \cdot L_{kd}``. It is computed on the batch's distinct
nodes weighted by their counts (:func:`info_nce_counted`): the same value, with
``distinct x distinct`` logits rather than ``B x B``.

**RLMRec-Gen** (generative, mask and reconstruct). Each batch, ``max(1, int(mask_ratio (U+I)))``
nodes drawn without replacement have their layer-0 embedding replaced by a learnable mask token
(zeros at the start); the batch's ONE propagation runs on these masked embeddings, so BPR is
scored on them too (the authors' single pass, no extra forward). An MLP ``g`` maps the masked
nodes' final embeddings to the profile space (``D -> (d_s + D) // 2 -> d_s``, LeakyReLU) and

.. math::
    L_{gen} = \mathrm{NCE}_{\tau_{re}}\big(g(e_M), s_M\big), \qquad
    L = L_{BPR} + l_2 L2 + recon\_weight \cdot L_{gen}

over the masked set ``M`` only (in-set InfoNCE, the authors' ``ssl_con_loss``). Evaluation
propagates the unmasked embeddings.

Where we differ from the authors' code, on purpose (one trainer for every baseline): the
backbone is ours (LightGCN's mean of layers, no 0.8 edge keep rate in training; cosines do not
see the mean-versus-sum scale), the layer count is the benchmark's (their amazon Gen config
uses 2 layers), and L2 is ours (``train.l2`` on the batch's layer-0 rows, theirs is 1e-7 on
every parameter, the MLP's included). A weight of 0 computes no extra term (Gen then masks
nothing), so the loss is RecObjective's BPR + L2 exactly.

The MLPs and the mask token are the objective's own weights (:meth:`parameters`), initialised
as the authors' are (Xavier-uniform weights; PyTorch's default bias rule) from a generator
seeded by ``train.seed``, so building an objective leaves torch's global generator untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmhni_local.core.config import TrainSettings
from llmhni_local.core.errors import ConfigError, DataError
from llmhni_local.train import losses
from llmhni_local.train.objectives import BatchLoss, RecObjective

#: The alignment weight chosen on validation Recall@20, per method (keyed as in
#: ``[baselines.<method>]``). Both grids are the set of values the authors' released configs
#: use across their backbones and data sets (``encoder/config/modelconf/*_plus.yml``:
#: kd_weight 1e-3, 1e-2, 1e-1; ``*_gene.yml``: recon_weight 0.01, 0.1, 1.0).
GRID_CON: dict[str, tuple] = {"kd_weight": (1e-3, 1e-2, 1e-1)}
GRID_GEN: dict[str, tuple] = {"recon_weight": (0.01, 0.1, 1.0)}
GRID: dict[str, dict[str, tuple]] = {"rlmrec_con": GRID_CON, "rlmrec_gen": GRID_GEN}


@dataclass(frozen=True)
class RLMRecConSettings:
    """RLMRec-Con, the contrastive alignment (``[baselines.rlmrec_con]``); defaults from the
    ``amazon`` block of the authors' ``lightgcn_plus.yml`` (the same as its top level).

    Args:
        kd_weight: weight of the alignment InfoNCE ``L_kd``. (default: ``0.01``)
        kd_temperature: its temperature tau. (default: ``0.2``)
    """

    kd_weight: float = 1e-2
    kd_temperature: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.kd_weight) and self.kd_weight >= 0):
            raise ConfigError(f"baselines.rlmrec_con.kd_weight must be >= 0, got {self.kd_weight}")
        if not (math.isfinite(self.kd_temperature) and self.kd_temperature > 0):
            raise ConfigError("baselines.rlmrec_con.kd_temperature must be > 0, "
                              f"got {self.kd_temperature}")


@dataclass(frozen=True)
class RLMRecGenSettings:
    """RLMRec-Gen, mask and reconstruct (``[baselines.rlmrec_gen]``); defaults from the
    ``amazon`` block of the authors' ``lightgcn_gene.yml`` (its top level says 0.1 / 0.1 / 0.2).

    Args:
        mask_ratio: share of all ``U+I`` nodes masked each batch (at least one).
            (default: ``0.15``)
        recon_weight: weight of the reconstruction InfoNCE ``L_gen``. (default: ``0.1``)
        re_temperature: its temperature (the authors' name). (default: ``0.5``)
    """

    mask_ratio: float = 0.15
    recon_weight: float = 0.1
    re_temperature: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"baselines.rlmrec_gen.mask_ratio must be in (0, 1), "
                              f"got {self.mask_ratio}")
        if not (math.isfinite(self.recon_weight) and self.recon_weight >= 0):
            raise ConfigError("baselines.rlmrec_gen.recon_weight must be >= 0, "
                              f"got {self.recon_weight}")
        if not (math.isfinite(self.re_temperature) and self.re_temperature > 0):
            raise ConfigError("baselines.rlmrec_gen.re_temperature must be > 0, "
                              f"got {self.re_temperature}")


def semantic_tensors(s_user: np.ndarray, s_item: np.ndarray, n_users: int,
                     n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The profile embeddings as float32 tensors, after checking they fit the data.

    Raises:
        DataError: (one line) when they are not ``(n_users, d_s)`` and ``(n_items, d_s)``
            arrays of finite numbers.
    """
    su, si = np.asarray(s_user), np.asarray(s_item)
    if (su.ndim != 2 or si.ndim != 2 or su.shape[0] != n_users or si.shape[0] != n_items
            or su.shape[1] != si.shape[1] or su.shape[1] == 0):
        raise DataError(f"rlmrec: profile embeddings of shape {su.shape} (users) and {si.shape} "
                        f"(items) do not match {n_users} users x {n_items} items with one width")
    if not (np.isfinite(su).all() and np.isfinite(si).all()):
        raise DataError("rlmrec: profile embeddings hold NaN or infinite values")
    return (torch.as_tensor(su, dtype=torch.float32).clone(),
            torch.as_tensor(si, dtype=torch.float32).clone())


def two_layer_mlp(d_in: int, d_out: int, generator: torch.Generator) -> nn.Sequential:
    """``d_in -> (d_in + d_out) // 2 -> d_out`` with a LeakyReLU, the authors' shape (both ways),
    initialised from ``generator`` only (``skip_init``: torch's global generator is not read)."""
    hidden = (d_in + d_out) // 2
    layers = [nn.utils.skip_init(nn.Linear, d_in, hidden), nn.LeakyReLU(),
              nn.utils.skip_init(nn.Linear, hidden, d_out)]
    with torch.no_grad():
        for lin in (layers[0], layers[2]):
            nn.init.xavier_uniform_(lin.weight, generator=generator)
            bound = 1.0 / math.sqrt(lin.in_features)  # nn.Linear's own bias rule
            lin.bias.uniform_(-bound, bound, generator=generator)
    return nn.Sequential(*layers)


def info_nce_bank(a: torch.Tensor, bank: torch.Tensor, targets: torch.Tensor, temperature: float,
                  counts: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of rows ``a`` against a whole bank: row ``k``'s positive is ``bank[targets[k]]``
    and every bank row is in its denominator (RLMRec-Con's user term); the mean over rows, row
    ``k`` counted ``counts[k]`` times when given. Unlike
    :func:`llmhni_local.train.losses.info_nce`, the candidates are not row-aligned with ``a``."""
    logits = F.normalize(a, dim=1) @ F.normalize(bank, dim=1).T / temperature
    per_row = F.cross_entropy(logits, targets, reduction="none")
    return per_row.mean() if counts is None else (counts * per_row).sum() / counts.sum()


def info_nce_counted(a: torch.Tensor, b: torch.Tensor, counts: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """:func:`llmhni_local.train.losses.info_nce` of a batch whose row pair ``(a_k, b_k)``
    appears ``counts[k]`` times, from its distinct rows alone: each copy of ``b_j`` is in every
    denominator (hence ``+ log counts_j``) and each copy of a row is a term of the mean. The
    value is the same; the logits are ``distinct x distinct`` instead of ``batch x batch``
    (a batch of 2,048 MovieLens items holds about half as many distinct ones)."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    per_row = torch.logsumexp(logits + counts.log()[None, :], dim=1) - logits.diagonal()
    return (counts * per_row).sum() / counts.sum()


class _RLMRecObjective(RecObjective):
    """BPR + L2 on the training graph, the profile tensors, and the objective's own weights
    (``self.net``); the two methods add their term."""

    method = "rlmrec"

    def __init__(self, edges: np.ndarray, n_users: int, n_items: int,
                 train_settings: TrainSettings, s_user: np.ndarray, s_item: np.ndarray) -> None:
        if train_settings.loss != "bpr":
            raise ConfigError(f"baselines.{self.method} trains with BPR: train.loss must be "
                              f"'bpr', got {train_settings.loss!r}")
        super().__init__(np.asarray(edges, dtype=np.int64).reshape(-1, 2), n_users, n_items,
                         train_settings)
        self.s_user, self.s_item = semantic_tensors(s_user, s_item, n_users, n_items)
        self.generator = torch.Generator().manual_seed(train_settings.seed)
        self.net = nn.Module()  # holds the MLP (and mask token): moved in place by to()

    def parameters(self) -> list[torch.nn.Parameter]:
        """The MLP's weights (and Gen's mask token), trained by the trainer's Adam."""
        return list(self.net.parameters())

    def to(self, device: torch.device | str) -> _RLMRecObjective:
        """Move the graph, the profile tensors and the objective's weights to ``device``."""
        super().to(device)
        self.s_user, self.s_item = self.s_user.to(self.device), self.s_item.to(self.device)
        self.net.to(self.device)
        return self

    def rec_l2(self, model, u_emb: torch.Tensor, i_emb: torch.Tensor, users: torch.Tensor,
               pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BPR (mean) and ``train.l2`` times the L2 penalty of the batch's layer-0 rows,
        as :class:`RecObjective` computes them."""
        eu = u_emb[users]
        rec = losses.bpr((eu * i_emb[pos]).sum(-1), (eu * i_emb[neg]).sum(-1)).mean()
        e_u, e_i = model.ego(users, pos)
        _, e_j = model.ego(users, neg)
        return rec, self.settings.l2 * losses.l2_penalty(e_u, e_i, e_j)

    def _check_width(self, name: str, expected: int, got: int) -> None:
        if expected != got:
            raise ConfigError(f"baselines.{self.method}: the objective was built for {name} "
                              f"{expected} but the model's is {got}")


class RLMRecConObjective(_RLMRecObjective):
    """RLMRec-Con: BPR + L2 + ``kd_weight`` times the InfoNCE between each batch node's final
    embedding and its MLP-mapped profile (users against all users' profiles; positive and
    negative items in-batch).

    Args:
        edges: ``(E, 2)`` training (user, item) pairs: the graph and the positives.
        n_users: number of users.
        n_items: number of items.
        train_settings: the ``[train]`` settings (``loss`` must be ``bpr``; ``l2``, ``seed``).
        settings: the ``[baselines.rlmrec_con]`` settings.
        s_user: ``(U, d_s)`` user profile embeddings (fixed).
        s_item: ``(I, d_s)`` item profile embeddings (fixed).
        out_dim: width of the model's final embeddings, ``model.out_dim`` (LightGCN: ``dim``;
            NGCF: ``dim * (layers + 1)``); the MLP maps ``d_s`` to it. Given here, not read
            from the model, because the MLP must exist before the trainer builds its
            optimiser.
    """

    method = "rlmrec_con"

    def __init__(self, edges: np.ndarray, n_users: int, n_items: int,
                 train_settings: TrainSettings, settings: RLMRecConSettings,
                 s_user: np.ndarray, s_item: np.ndarray, out_dim: int) -> None:
        super().__init__(edges, n_users, n_items, train_settings, s_user, s_item)
        self.con = settings
        self.out_dim = int(out_dim)
        self.net.mlp = two_layer_mlp(self.s_user.shape[1], self.out_dim, self.generator)

    def kd_loss(self, u_emb: torch.Tensor, i_emb: torch.Tensor, users: torch.Tensor,
                pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """``L_kd`` (unweighted) from the final embeddings of all users and items.

        Computed on the batch's distinct nodes with their counts, which gives the value of
        the authors' row-by-row sum (duplicates included) at a fraction of the cost."""
        tau, mlp = self.con.kd_temperature, self.net.mlp
        uu, u_count = torch.unique(users, return_counts=True)
        loss = info_nce_bank(u_emb[uu], mlp(self.s_user), uu, tau, u_count.float())
        items = torch.unique(torch.cat([pos, neg]))
        mapped = mlp(self.s_item[items])  # one MLP call for both item terms
        for side in (pos, neg):
            ii, count = torch.unique(side, return_counts=True)
            at = torch.searchsorted(items, ii)
            loss = loss + info_nce_counted(i_emb[ii], mapped[at], count.float(), tau)
        return loss

    def __call__(self, model, users: torch.Tensor, pos: torch.Tensor,
                 neg: torch.Tensor) -> BatchLoss:
        u_emb, i_emb = model(self.adj)
        rec, reg = self.rec_l2(model, u_emb, i_emb, users, pos, neg)
        total = rec + reg
        parts = {"rec": float(rec.detach()), "l2": float(reg.detach())}
        if self.con.kd_weight > 0:
            self._check_width("out_dim", self.out_dim, u_emb.shape[1])
            kd = self.kd_loss(u_emb, i_emb, users, pos, neg)
            total = total + self.con.kd_weight * kd
            parts["kd"] = float(kd.detach())
        return BatchLoss(total, parts)


class RLMRecGenObjective(_RLMRecObjective):
    """RLMRec-Gen: mask ``mask_ratio`` of the nodes' layer-0 embeddings with a learnable token,
    propagate once (BPR reads this pass), and reconstruct the masked nodes' profiles from their
    final embeddings through an MLP (InfoNCE over the masked set, weight ``recon_weight``).

    Args:
        edges: ``(E, 2)`` training (user, item) pairs: the graph and the positives.
        n_users: number of users.
        n_items: number of items.
        train_settings: the ``[train]`` settings (``loss`` must be ``bpr``; ``l2``, ``seed``).
        settings: the ``[baselines.rlmrec_gen]`` settings.
        s_user: ``(U, d_s)`` user profile embeddings (fixed).
        s_item: ``(I, d_s)`` item profile embeddings (fixed).
        out_dim: width of the model's final embeddings, ``model.out_dim`` (LightGCN: ``dim``;
            NGCF: ``dim * (layers + 1)``), the MLP's input.
        dim: width of its layer-0 embeddings, the mask token's; None: ``out_dim``, right for
            LightGCN (NGCF needs it). Both are given here because the token and the MLP must
            exist before the trainer builds its optimiser. (default: ``None``)

    The masked nodes are drawn from a numpy generator seeded by ``(train.seed, epoch)`` in
    :meth:`start_epoch`, not from the trainer's generator, so the batches and negatives are
    those of plain BPR with the same seed.
    """

    method = "rlmrec_gen"

    def __init__(self, edges: np.ndarray, n_users: int, n_items: int,
                 train_settings: TrainSettings, settings: RLMRecGenSettings,
                 s_user: np.ndarray, s_item: np.ndarray, out_dim: int,
                 dim: int | None = None) -> None:
        super().__init__(edges, n_users, n_items, train_settings, s_user, s_item)
        self.gen = settings
        self.out_dim, self.dim = int(out_dim), int(dim if dim is not None else out_dim)
        self.net.mlp = two_layer_mlp(self.out_dim, self.s_user.shape[1], self.generator)
        self.net.mask_token = nn.Parameter(torch.zeros(1, self.dim))  # the authors' zero start
        self.n_masked = max(int((n_users + n_items) * settings.mask_ratio), 1)
        self.mask_rng = np.random.default_rng((train_settings.seed, 0))

    def start_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        super().start_epoch(epoch, rng)
        self.mask_rng = np.random.default_rng((self.settings.seed, epoch))

    def draw_mask(self) -> torch.Tensor:
        """Indices (users first, items after ``U``) of this batch's ``n_masked`` distinct
        masked nodes."""
        seeds = self.mask_rng.choice(self.n_users + self.n_items, self.n_masked, replace=False)
        return torch.as_tensor(seeds, dtype=torch.long, device=self.device)

    def _table(self, model) -> tuple[str, torch.Tensor]:
        """The model's layer-0 table: its one ``(U+I, dim)`` parameter."""
        n = self.n_users + self.n_items
        found = [(k, p) for k, p in model.named_parameters() if p.ndim == 2 and p.shape[0] == n]
        if len(found) != 1:
            raise ConfigError(f"baselines.{self.method} needs a model with one ({n}, dim) "
                              f"layer-0 embedding table, found {len(found)}")
        return found[0]

    def masked_ego(self, table: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """``table`` with rows ``seeds`` replaced by the mask token (gradients reach both)."""
        token = self.net.mask_token.expand(len(seeds), -1)
        return table.index_copy(0, seeds, token)

    def masked_forward(self, model, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's final ``(user, item)`` embeddings, propagated from the masked layer 0."""
        name, table = self._table(model)
        self._check_width("dim", self.dim, table.shape[1])
        return torch.func.functional_call(model, {name: self.masked_ego(table, seeds)},
                                          (self.adj,))

    def reconstruction(self, final: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """``L_gen`` (unweighted): InfoNCE between ``g(final[seeds])`` and the masked nodes'
        profiles; ``final`` is ``(U+I, out_dim)``, users first. Other rows are not read."""
        self._check_width("out_dim", self.out_dim, final.shape[1])
        profiles = torch.cat([self.s_user, self.s_item])[seeds]
        return losses.info_nce(self.net.mlp(final[seeds]), profiles, self.gen.re_temperature)

    def __call__(self, model, users: torch.Tensor, pos: torch.Tensor,
                 neg: torch.Tensor) -> BatchLoss:
        if self.gen.recon_weight == 0:  # off: plain BPR + L2, nothing masked
            u_emb, i_emb = model(self.adj)
            seeds = None
        else:
            seeds = self.draw_mask()
            u_emb, i_emb = self.masked_forward(model, seeds)
        rec, reg = self.rec_l2(model, u_emb, i_emb, users, pos, neg)
        total = rec + reg
        parts = {"rec": float(rec.detach()), "l2": float(reg.detach())}
        if seeds is not None:
            gen = self.reconstruction(torch.cat([u_emb, i_emb]), seeds)
            total = total + self.gen.recon_weight * gen
            parts["gen"] = float(gen.detach())
        return BatchLoss(total, parts)
