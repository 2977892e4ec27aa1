"""Typed, frozen settings of the LLMHNI method (docs/METHOD.md stages 3, 4, 7 and 8).

Two tables, so that each pipeline stage can be cached on the settings it actually reads:
:class:`AlignSettings` (the alignment MLP, stage 3) and :class:`LLMHNISettings` (negatives,
graph modification and the combined loss, stages 4, 7 and 8; it holds the alignment table as
``align``). Both are built with :func:`llmhni_local.core.config.build`, which rejects unknown keys::

    [llmhni]
    lambda_de = 0.1
    similarity_rule = "threshold"

    [llmhni.align]
    epochs = 30
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmhni_local.core.errors import ConfigError


@dataclass(frozen=True)
class AlignSettings:
    """The alignment MLP ``f``: ``z' = f(x)``, one network shared by users and items (the
    paper writes ``z'_u = f(x_u)`` and ``z'_i = f(x_i)`` with the same ``f``; user and item
    profiles come from the same text encoder, so one map keeps them in one space).

    Trained with InfoNCE on pseudo-labels: each user's ``n_pseudo`` interacted training items
    most similar to the user by raw cosine are its positives; the other items of the batch are
    its negatives (pairs that are pseudo-positives themselves are masked out of the negatives).

    Args:
        n_pseudo: pseudo-positive items per user, N in docs/METHOD.md. (default: ``50``)
        hidden: hidden width of the two-layer MLP. (default: ``256``)
        out_dim: size of the aligned vectors ``z'``. (default: ``64``, the recommender's size)
        epochs: passes over the pseudo-label pairs. On MovieLens-100K (943 users, 1,682
            items, 384-dim all-MiniLM-L6-v2 profiles) the loss flattens after about 5 epochs;
            10 epochs took 63 s on one thread of a 2-core machine shared with about 9 other
            busy processes; expect much less on an idle machine. (default: ``10``)
        lr: Adam learning rate. (default: ``1e-3``)
        batch_size: pseudo-label pairs per batch; the in-batch negatives. (default: ``1024``)
        temperature: InfoNCE temperature. (default: ``0.2``, the tau of docs/METHOD.md)
        weight_decay: Adam weight decay of the MLP. (default: ``0.0``)
    """

    n_pseudo: int = 50
    hidden: int = 256
    out_dim: int = 64
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 1024
    temperature: float = 0.2
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if min(self.n_pseudo, self.hidden, self.out_dim, self.epochs, self.batch_size) <= 0:
            raise ConfigError("llmhni.align: n_pseudo, hidden, out_dim, epochs and batch_size "
                              "must be > 0")
        if self.batch_size < 2:
            raise ConfigError("llmhni.align.batch_size must be >= 2 (in-batch negatives)")
        if self.lr <= 0 or self.temperature <= 0 or self.weight_decay < 0:
            raise ConfigError("llmhni.align: lr and temperature must be > 0, weight_decay >= 0")


@dataclass(frozen=True)
class LLMHNISettings:
    """The combined LLMHNI objective ``L_rec + lambda_de * L_de + lambda_hal * L_hal + L2``.

    Semantic-guided negatives (stage 4): for each training pair ``(u, i+)`` the sampler draws
    ``pool_size`` uniform negatives; the current model scores them and the negative is

    * ``similarity_rule = "threshold"``: the highest-scoring candidate whose similarity
      ``cos(z'_u, z'_j)`` is below the user's threshold. The threshold is the
      ``threshold_quantile`` quantile of the user's similarities to its own training items
      (in G'): a candidate at least as similar to the user as a typical item the user did
      interact with looks like a positive, not a negative. A per-user rule, because users'
      similarity levels differ (a user with narrow tastes has high similarities throughout);
      a global cut would flag everything for some users and nothing for others. If every
      candidate of a row is above the threshold, the least similar one is taken (the one least
      likely to be a false negative), and the row is counted as a fallback.
    * ``similarity_rule = "combined"``: the candidate maximising ``s - beta * sim``.

    Candidates scoring higher than the chosen negative were skipped for their similarity:
    these are the potential false negatives; they are never used as negatives and are counted
    (``false_negatives_flagged`` per batch).

    Args:
        lambda_de: weight of L_de, the G-vs-G' cross-graph InfoNCE (lambda_1). (default: ``0.1``)
        lambda_hal: weight of L_hal, the InfoNCE between an edge-dropped view of G and one of
            G' (lambda_2). (default: ``0.1``)
        tau: temperature of L_de and L_hal. (default: ``0.2``)
        rho: edge-drop rate of the L_hal views, redrawn every epoch. (default: ``0.1``)
        pool_size: uniform candidates per positive, M. Ten follows the small pools of dynamic
            negative sampling (DNS, Zhang et al. 2013): the top of a larger pool is more often
            an unobserved positive, which is what the similarity check must then catch; with 10,
            scoring the pool costs 10 dot products per pair. (default: ``10``)
        similarity_rule: ``threshold`` or ``combined`` (see above). (default: ``"threshold"``)
        threshold_quantile: quantile q of the user's similarities to its own training items
            that is the user's threshold (a candidate more similar to the user than that share
            of the user's own items is high-similarity, never a negative). A low q protects
            too much: at the median every negative is unlike the user's past, the model learns
            the profile similarity itself, and its lists drift toward items like the training
            history. On MovieLens-100K (natural and 20% synthetic noise, seed 0) validation
            Recall@20 was best at 0.75 of 0.5 / 0.75 / 0.9 in both; docs/DESIGN.md,
            "Semantic negatives and the similarity threshold". (default: ``0.75``)
        beta: weight of the similarity in the ``combined`` rule; scores are inner products of
            the model's embeddings and similarities are cosines in [-1, 1], so beta sets how
            many score units one unit of cosine is worth. (default: ``1.0``)
        semantic_negatives: choose the negative by the rules above; off: the first candidate
            of the pool, i.e. a plain uniform negative (ablation "without semantic
            negatives"). (default: ``True``)
        alignment: measure similarity with the aligned vectors ``z'``; off: with the raw text
            embeddings ``x`` (ablation "without alignment"). Read by
            :func:`llmhni_local.llmhni.align.similarity_vectors`. (default: ``True``)
        denoise: train on G' built from the verdicts; off: G' = G and L_de is not computed
            (ablation "without denoising"). (default: ``True``)
        hal: compute L_hal; off: ablation "without L_hal". (default: ``True``)
        contrast_warmup: epochs over which the weights of L_de and L_hal rise linearly from 0
            to ``lambda_de`` / ``lambda_hal`` (epoch ``e`` uses ``min(1, (e - 1) / W)`` of
            them); 0: full weight from the first epoch. The paper is silent; measured on
            MovieLens-100K (docs/DESIGN.md): at full weight from a random start, the two
            contrastive terms held BPR at log 2 for about 50 epochs, while BPR with the
            semantic negatives alone learned at once. (default: ``10``)
        align: the alignment MLP's settings. (default: :class:`AlignSettings` defaults)
    """

    lambda_de: float = 0.1
    lambda_hal: float = 0.1
    contrast_warmup: int = 10
    tau: float = 0.2
    rho: float = 0.1
    pool_size: int = 10
    similarity_rule: Literal["threshold", "combined"] = "threshold"
    threshold_quantile: float = 0.75
    beta: float = 1.0
    semantic_negatives: bool = True
    alignment: bool = True
    denoise: bool = True
    hal: bool = True
    align: AlignSettings = field(default_factory=AlignSettings)

    def __post_init__(self) -> None:
        if self.lambda_de < 0 or self.lambda_hal < 0:
            raise ConfigError("llmhni.lambda_de and llmhni.lambda_hal must be >= 0")
        if self.contrast_warmup < 0:
            raise ConfigError(f"llmhni.contrast_warmup must be >= 0, got {self.contrast_warmup}")
        if self.tau <= 0:
            raise ConfigError(f"llmhni.tau must be > 0, got {self.tau}")
        if not 0.0 <= self.rho < 1.0:
            raise ConfigError(f"llmhni.rho must be in [0, 1), got {self.rho}")
        if self.pool_size <= 0:
            raise ConfigError(f"llmhni.pool_size must be > 0, got {self.pool_size}")
        if self.similarity_rule not in ("threshold", "combined"):
            raise ConfigError(f"llmhni.similarity_rule must be threshold or combined, "
                              f"got {self.similarity_rule!r}")
        if not 0.0 <= self.threshold_quantile <= 1.0:
            raise ConfigError(f"llmhni.threshold_quantile must be in [0, 1], "
                              f"got {self.threshold_quantile}")
        if self.beta < 0:
            raise ConfigError(f"llmhni.beta must be >= 0, got {self.beta}")

    @property
    def de_on(self) -> bool:
        """Whether L_de is computed (denoising on and a non-zero weight)."""
        return self.denoise and self.lambda_de > 0

    @property
    def hal_on(self) -> bool:
        """Whether L_hal is computed (switch on and a non-zero weight)."""
        return self.hal and self.lambda_hal > 0
