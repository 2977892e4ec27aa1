r"""BOD: which training interactions should the recommender trust, learnt by bi-level
optimisation (Wang, Gao, Li, Yu, Guo, Yin, "Efficient Bi-Level Optimization for Recommendation
Denoising", KDD 2023, arXiv 2210.10321; released code github.com/CoderWZW/BOD, built on SELFRec).

A generator :math:`g_\phi` gives each (user, item) pair a weight in (0, 1); the recommender
:math:`\theta` minimises the weighted loss (inner problem) and the generator is learnt so that
the weights serve the recommender (outer problem). The paper's two efficiency devices are both
here: one network instead of one free weight per interaction, and one step of gradient matching
in place of unrolling the inner training.

Inner step (every batch, the trainer's Adam on :math:`\theta`; :math:`w` carries no gradient):

.. math::
    w_{ui} = g_\phi(\mathrm{sg}(e_u), \mathrm{sg}(e_i)), \qquad
    L_{in} = \overline{w_{ui}\,\mathrm{bpr}(s_{ui} - s_{uj})}
           + \alpha\, \overline{w_{ui}\, \lVert \hat e_u - \hat e_i \rVert^2}
           + \gamma\, \tfrac14 \big(2\,U(e_u) + U(e_i) + U(e_j)\big) + l_2 \cdot L2

with :math:`\hat e` the unit vectors, :math:`U(x) = \log \overline{\exp(-2 \lVert \hat x_a -
\hat x_b \rVert^2)}` over the batch's pairs of rows (DirectAU's alignment and uniformity, which
the released BOD adds to BPR; the users count twice as there), and the bar a batch mean.

Outer step (:attr:`BODSettings.outer_steps` Adam steps on :math:`\phi` per epoch, on the first
batches of every epoch after the first, i.e. after each inner epoch as in the released loop):

.. math::
    L_{out}(\phi) = \sum_{P \in \theta,\ \dim P = 2} \sum_{c}
        \Big(1 - \cos\big(\nabla_P \overline{w\,\mathrm{bpr}}\,[:, c],\
        \nabla_P \overline{w\, \lVert \hat e_u - \hat e_i \rVert^2}\,[:, c]\big)\Big)

the released code's one-step gradient matching: the gradient the weighted BPR loss gives the
recommender's 2-D weights (the user and the item rows of the embedding table apart, as the
released encoder keeps two tables; NGCF's layer matrices), column by column, should point where
the weighted alignment's gradient points; 1-D weights (biases) are skipped, as there.
:math:`\phi` gets the exact gradient of :math:`L_{out}` (second order through both gradients);
:math:`\theta` is not changed by the outer step.

Only the paper's abstract could be read here, so the mechanism and the defaults follow the
released code (``conf/BOD.conf``, ``model/graph/BOD.py``): generator
``Linear(2d, 64) - ReLU - Linear(64, 64) - Linear(64, 1) - sigmoid`` on the concatenated final
embeddings (the released "VAE" generator, whose sampling is commented out), generator Adam lr
``1e-3``, one outer step per epoch (``outer_loop 1``, ``inner_loop 1``), ``weight_alignment 1``,
``weight_uniformity 0.5``, no warm-up, no weight normalisation (the sigmoid's output is the
weight). Where we depart from it:

* Bug fixes. The released ``(B, 1)`` weights broadcast against ``(B,)`` losses, so each BPR
  term mixed the weight of one pair with the scores of another, and the alignment was weighted
  by the batch's mean weight only: here each pair has its own weight. The released outer step
  weighs the positive by ``g(u, u)``: here by ``g(u, i)``.
* Choices. The weight multiplies the pair's loss (a reweighted loss) rather than its scores,
  and the sampled negative carries no weight of its own: the weights are the interactions'.
  The generator reads the embeddings without gradient (``sg``), so ``w`` is a function of
  ``phi`` alone, as the outer variable of a bi-level problem should be. The released
  ``generator_reg`` term is dropped: it is a norm of the recommender's embeddings, with no
  gradient for ``phi``, so it never changed the generator.

Cost: the outer step (a double backward through the propagation) is once per epoch and cheap;
the uniformity term is not: three Gram matrices of the batch's distinct users, positive and
negative items a batch (up to ``B x B``), most of an epoch's time at the trainer's batch of
2,048 (the released batch is 512: four times cheaper per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmhni_local.core.config import TrainSettings
from llmhni_local.core.errors import ConfigError
from llmhni_local.graph.adjacency import bipartite_adjacency
from llmhni_local.train import losses
from llmhni_local.train.objectives import BatchLoss

#: How far the weights move from where the generator's random start puts them is set by the
#: generator's learning rate (one outer step per epoch): the released 1e-3 and a decade each
#: side. Our choice, not the paper's sensitivity study, which could not be read here.
GRID: dict[str, tuple] = {"generator_lr": (1e-4, 1e-3, 1e-2)}


@dataclass(frozen=True)
class BODSettings:
    """BOD's own settings (``[baselines.bod]``).

    Args:
        generator_lr: Adam learning rate of the weight generator (the outer step); the
            released ``-generator_lr``. (default: ``1e-3``)
        hidden: hidden width of the generator; the released generator's fixed 64.
            (default: ``64``)
        outer_steps: generator steps per epoch, each on one of the epoch's first batches, from
            the second epoch on (after an inner epoch, as released); the released
            ``-outer_loop``. 0 freezes the generator at its random start. (default: ``1``)
        align_weight: weight of the weighted alignment term of the inner loss; the released
            ``-weight_alignment``; 0 leaves weighted BPR alone. (default: ``1.0``)
        uniform_weight: weight of the uniformity term of the inner loss; the released
            ``-weight_uniformity``. (default: ``0.5``)
    """

    generator_lr: float = 1e-3
    hidden: int = 64
    outer_steps: int = 1
    align_weight: float = 1.0
    uniform_weight: float = 0.5

    def __post_init__(self) -> None:
        if not self.generator_lr > 0:
            raise ConfigError(f"baselines.bod.generator_lr must be > 0, got {self.generator_lr}")
        if self.hidden <= 0:
            raise ConfigError(f"baselines.bod.hidden must be > 0, got {self.hidden}")
        if self.outer_steps < 0:
            raise ConfigError(f"baselines.bod.outer_steps must be >= 0, got {self.outer_steps}")
        for name in ("align_weight", "uniform_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"baselines.bod.{name} must be >= 0, got {getattr(self, name)}")


class WeightGenerator(nn.Module):
    """``g(e_u, e_i)``: the weight of a pair from its user's and item's embeddings, in (0, 1)."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.Linear(hidden, 1))

    def forward(self, e_u: torch.Tensor, e_i: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([e_u, e_i], dim=1))).squeeze(1)


def alignment(e_u: torch.Tensor, e_i: torch.Tensor) -> torch.Tensor:
    """Per-pair squared distance of the unit vectors (DirectAU's alignment, no reduction)."""
    return (F.normalize(e_u, dim=1) - F.normalize(e_i, dim=1)).pow(2).sum(1)


def uniformity(x: torch.Tensor, counts: torch.Tensor | None = None, t: float = 2.0) -> torch.Tensor:
    r""":math:`\log` of the mean of :math:`\exp(-t \lVert \hat x_a - \hat x_b \rVert^2)` over the
    pairs ``a != b`` of rows (DirectAU's uniformity); ``counts``, when given, says how many
    times each row stands in the batch (the value and gradient are those of the rows repeated).

    With unit rows :math:`\lVert \hat a - \hat b \rVert^2 = 2 - 2\, \hat a \cdot \hat b`, so it
    is one Gram matrix and one ``exp`` (the constant ``-2t`` comes out of the log), and a row
    repeated keeps a finite gradient, where ``pdist`` takes the square root of 0. Passing the
    distinct rows with their counts makes the Gram matrix smaller: a batch of 2,048 pairs of
    MovieLens-100K has under 943 distinct users.
    """
    c = (torch.ones(x.shape[0], dtype=x.dtype, device=x.device) if counts is None
         else counts.to(x.dtype))
    n = float(c.sum())
    if n < 2:
        return x.sum() * 0.0
    z = F.normalize(x, dim=1)
    k = torch.exp((z @ z.T) * (2.0 * t))
    # every ordered pair of batch rows but a row with itself
    pairs = c @ k @ c - (c * k.diagonal()).sum()
    return (pairs / (n * (n - 1))).log() - 2.0 * t


def batch_uniformity(emb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """:func:`uniformity` of ``emb[index]``, computed on the distinct rows with their counts."""
    rows, counts = torch.unique(index, return_counts=True)
    return uniformity(emb[rows], counts)


def gradient_distance(g_real: list[torch.Tensor | None],
                      g_syn: list[torch.Tensor | None]) -> torch.Tensor:
    """Sum over 2-D gradients of ``1 - cos`` of matching columns (released ``match_loss``,
    ``'ours'``: the gradient is transposed and compared row by row); 1-D ones are skipped."""
    total = None
    for a, b in zip(g_real, g_syn):
        if a is None or b is None or a.dim() != 2:
            continue
        cos = (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0) + 1e-6)
        term = (1.0 - cos).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("the recommender has no 2-D weights to match gradients on")
    return total


class BODObjective:
    """BOD's weighted loss for the trainer, with the generator and its own optimiser.

    Args:
        edges: ``(E, 2)`` training (user, item) pairs: the graph and the positives.
        n_users: number of users.
        n_items: number of items.
        train_settings: the ``[train]`` settings (only ``l2`` is read here).
        settings: BOD's settings.

    The generator is built at the first batch, when the recommender's width is known
    (``model.out_dim``; NGCF's is ``dim * (layers + 1)``), from torch's generator, which the
    trainer has seeded by then (a call of :meth:`edge_weights` before training builds it
    earlier, and so draws other numbers). :meth:`parameters` is empty: the trainer's Adam never sees
    the generator, which only the outer step updates.
    """

    def __init__(self, edges: np.ndarray, n_users: int, n_items: int,
                 train_settings: TrainSettings, settings: BODSettings | None = None) -> None:
        self.edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        self.n_users, self.n_items = n_users, n_items
        self.train_settings, self.settings = train_settings, settings or BODSettings()
        self.adj = bipartite_adjacency(self.edges, n_users, n_items)
        self.device = torch.device("cpu")
        self.generator: WeightGenerator | None = None
        self.generator_opt: torch.optim.Adam | None = None
        self.model: nn.Module | None = None  # the last model seen, for edge_weights
        self.epoch, self.batch_in_epoch = 0, 0
        self.last_outer: float | None = None
        self.outer_steps_done = 0

    # ------------------------------------------------------------------ trainer interface
    @property
    def positives(self) -> np.ndarray:
        return self.edges

    def parameters(self) -> list[torch.nn.Parameter]:
        """None: the generator has its own optimiser and objective (the outer step)."""
        return []

    def to(self, device: torch.device | str) -> BODObjective:
        """Move the graph, the generator and its optimiser's state to ``device``."""
        self.device = torch.device(device)
        self.adj = self.adj.to(self.device)
        if self.generator is not None:
            self.generator.to(self.device)
            for state in self.generator_opt.state.values():
                for key, value in state.items():
                    if torch.is_tensor(value) and value.dim() > 0:  # Adam's step stays put
                        state[key] = value.to(self.device)
        return self

    def start_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        self.epoch, self.batch_in_epoch = epoch, 0

    def eval_adj(self) -> torch.Tensor:
        return self.adj

    def __call__(self, model, users: torch.Tensor, pos: torch.Tensor,
                 neg: torch.Tensor) -> BatchLoss:
        s = self.settings
        self.model = model
        self._ensure_generator(model.out_dim)
        if self.epoch > 1 and self.batch_in_epoch < s.outer_steps:
            self.last_outer = self.outer_step(model, users, pos, neg)
        self.batch_in_epoch += 1

        u_emb, i_emb = model(self.adj)
        eu, ei, ej = u_emb[users], i_emb[pos], i_emb[neg]
        with torch.no_grad():
            w = self.generator(eu, ei)
        rec = (w * losses.bpr((eu * ei).sum(-1), (eu * ej).sum(-1))).mean()
        e_u, e_i = model.ego(users, pos)
        _, e_j = model.ego(users, neg)
        reg = self.train_settings.l2 * losses.l2_penalty(e_u, e_i, e_j)
        total = rec + reg
        parts = {"rec": float(rec.detach()), "l2": float(reg.detach()),
                 "weight_mean": float(w.mean()), "weight_std": float(w.std(unbiased=False))}
        if s.align_weight > 0:
            align = (w * alignment(eu, ei)).mean()
            total = total + s.align_weight * align
            parts["align"] = float(align.detach())
        if s.uniform_weight > 0:
            unif = (2 * batch_uniformity(u_emb, users) + batch_uniformity(i_emb, pos)
                    + batch_uniformity(i_emb, neg)) / 4
            total = total + s.uniform_weight * unif
            parts["uniform"] = float(unif.detach())
        if self.last_outer is not None:
            parts["outer"] = self.last_outer  # the latest outer loss, so the epoch mean is it
        return BatchLoss(total, parts)

    # ------------------------------------------------------------------ the outer step
    def per_table(self, grads) -> list[torch.Tensor | None]:
        """The gradient of the one ``(U+I, d)`` node table as a user and an item table, so
        columns are matched per table as in the released code, whose encoder keeps two."""
        nodes = self.n_users + self.n_items
        out: list[torch.Tensor | None] = []
        for g in grads:
            split = g is not None and g.ndim == 2 and g.shape[0] == nodes
            out += [g[: self.n_users], g[self.n_users:]] if split else [g]
        return out

    def outer_step(self, model, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> float:
        """One Adam step of the generator on the gradient-matching loss of this batch; the
        recommender's weights and their ``.grad`` are left as they were. Returns the loss."""
        self._ensure_generator(model.out_dim)
        thetas = [p for p in model.parameters() if p.requires_grad]
        u_emb, i_emb = model(self.adj)
        eu, ei, ej = u_emb[users], i_emb[pos], i_emb[neg]
        w = self.generator(eu.detach(), ei.detach())
        real = (w * losses.bpr((eu * ei).sum(-1), (eu * ej).sum(-1))).mean()
        syn = (w * alignment(eu, ei)).mean()
        g_real = torch.autograd.grad(real, thetas, create_graph=True, allow_unused=True)
        g_syn = torch.autograd.grad(syn, thetas, create_graph=True, allow_unused=True)
        loss = gradient_distance(self.per_table(g_real), self.per_table(g_syn))
        phis = list(self.generator.parameters())
        grads = torch.autograd.grad(loss, phis, allow_unused=True)
        self.generator_opt.zero_grad(set_to_none=True)
        for p, g in zip(phis, grads):
            p.grad = g
        self.generator_opt.step()
        self.outer_steps_done += 1
        return float(loss.detach())

    # ------------------------------------------------------------------ inspection
    def edge_weights(self, edges: np.ndarray, model: nn.Module | None = None) -> np.ndarray:
        """The generator's current weight of each ``(user, item)`` pair (no gradient), from
        ``model``'s embeddings in eval mode (default: the model of the latest batch)."""
        model = model if model is not None else self.model
        if model is None:
            raise ValueError("BOD's weights need the recommender: train a batch or pass model")
        self._ensure_generator(model.out_dim)
        pairs = torch.as_tensor(np.asarray(edges, dtype=np.int64).reshape(-1, 2),
                                device=self.device)
        was_training = model.training
        model.eval()  # no NGCF message dropout in the embeddings the weights are read from
        try:
            with torch.no_grad():
                u_emb, i_emb = model(self.adj)
                w = self.generator(u_emb[pairs[:, 0]], i_emb[pairs[:, 1]])
        finally:
            model.train(was_training)
        return w.cpu().numpy()

    def _ensure_generator(self, width: int) -> None:
        if self.generator is None:
            self.generator = WeightGenerator(width, self.settings.hidden).to(self.device)
            self.generator_opt = torch.optim.Adam(self.generator.parameters(),
                                                  lr=self.settings.generator_lr)
