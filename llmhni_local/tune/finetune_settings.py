"""Settings of LoRA fine-tuning (``configs/finetune.toml``, table ``[finetune]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmhni_local.core.config import load_config
from llmhni_local.core.errors import ConfigError


@dataclass(frozen=True)
class FinetuneSettings:
    """LoRA fine-tuning of the rater (``configs/finetune.toml``, table ``[finetune]``).

    Args:
        base: the rater to tune: registry name (``smollm2``) or model folder; the same model
            must then rate with the adapter. (default: ``"smollm2"``)
        r: LoRA rank. vLLM serves ranks up to its ``max_lora_rank`` (vLLM's own default 16;
            the in-process backend sets it from the adapter). (default: ``16``)
        alpha: LoRA scaling numerator (the update is scaled by alpha / r). (default: ``32``)
        dropout: dropout on the LoRA input during training. (default: ``0.05``)
        target_modules: projections that get LoRA matrices; the attention projections are
            what vLLM serves on every Llama-like model. (default:
            ``("q_proj", "k_proj", "v_proj", "o_proj")``)
        last_layers: put LoRA only in the last N decoder layers (0: every layer). The layers
            below hold no LoRA and never change, so backpropagation stops at the lowest tuned
            layer and (``cache_frozen``) their output is computed once, not every epoch.
            The main lever on a CPU: on SmolLM2-135M (30 layers, ~240-token prompts, 2 cores)
            a training step cost 0.50 s per example with 8 tuned layers, 0.27 with 4 and
            0.16 with 2, against ~1.4 for all 30; the one pass through the frozen layers
            costs ~0.5 s per prompt whatever N is. (default: ``4``)
        cache_frozen: with ``last_layers``, keep each prompt's hidden states below the tuned
            layers in memory (float32: tokens x hidden size x 4 bytes per prompt, about 0.5 MB
            for a 230-token SmolLM2 prompt) and run only the tuned layers per step. Checked
            against the full forward pass on the first batch; a model where the two differ
            (e.g. one that scales its input embeddings) falls back to the full pass.
            (default: ``True``)
        epochs: passes over the training labels. One epoch on a few hundred labels learns
            only the label prior with SmolLM2-135M (docs/BENCHMARKS.md); several epochs at a higher
            learning rate than the usual 2e-4 do better (measured by
            ``bench/rater_quality.py``). (default: ``3``)
        lr: peak AdamW learning rate (linear warm-up, then linear decay to 0). (default:
            ``1e-3``)
        batch_size: examples per optimiser step. (default: ``8``)
        weight_decay: AdamW weight decay on the LoRA matrices. (default: ``0.0``)
        warmup_share: share of the steps spent warming up. (default: ``0.06``)
        max_grad_norm: gradient clipping (0: none). (default: ``1.0``)
        class_weights: ``balanced`` weights each label by n / (3 n_label) in the loss, so the
            majority label (High) cannot win by itself; ``none`` uses plain cross-entropy.
            (default: ``"balanced"``)
        val_share: share of the labelled pairs held out for validation. (default: ``0.2``)
        split: ``user`` (held-out users; falls back to pairs with fewer than
            ``min_val_users`` users to hold out) or ``pair``. (default: ``"user"``)
        min_val_users: fewest validation users for a split by user. (default: ``5``)
        views: which views' prompts to train on; each label gives one example per view.
            (default: ``("user", "item")``)
        answer: what the loss covers at the answer. ``label``: the label's tokens and the chat
            template's end-of-turn token (a few positions past the prompt, still no loss on
            the prompt), so the tuned model's greedy answer is exactly the label and parses;
            the first of them is the token the backends score. ``first_token``: that first
            token only; cheapest, but the greedy text may then run on (SmolLM2 tuned this way
            answered "Medium Low Low", which the parser rightly rejects). (default:
            ``"label"``)
        max_liked: L of the item-centric prompt; ``None`` takes the run's rating setting
            (``RUN/rating.json``), else the rating stage's default, so prompts match rating.
            (default: ``None``)
        dtype: compute dtype of the forward pass. ``bfloat16`` autocasts matrix products (the
            LoRA weights and optimiser stay float32); it pays only on a CPU with AVX-512 BF16
            or AMX: on one without (an AVX2-only AMD EPYC, measured) a bf16 matrix product is
            ~300x slower than float32. (default: ``"float32"``)
        validate_before: measure the untuned model on the validation pairs first (the card's
            "before" figures). (default: ``True``)
        seed: seed of the split, LoRA initialisation, order and dropout. (default: ``0``)
        threads: torch CPU threads (0: torch's default). (default: ``0``)
    """

    base: str = "smollm2"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    last_layers: int = 4
    cache_frozen: bool = True
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 8
    weight_decay: float = 0.0
    warmup_share: float = 0.06
    max_grad_norm: float = 1.0
    class_weights: Literal["balanced", "none"] = "balanced"
    val_share: float = 0.2
    split: Literal["user", "pair"] = "user"
    min_val_users: int = 5
    views: tuple[str, ...] = ("user", "item")
    answer: Literal["label", "first_token"] = "label"
    max_liked: int | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    validate_before: bool = True
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.r >= 1, f"finetune.r must be >= 1, got {self.r}"),
            (self.alpha > 0, f"finetune.alpha must be > 0, got {self.alpha}"),
            (0.0 <= self.dropout < 1.0, f"finetune.dropout must be in [0, 1), got {self.dropout}"),
            (bool(self.target_modules), "finetune.target_modules must not be empty"),
            (self.last_layers >= 0, f"finetune.last_layers must be >= 0, got {self.last_layers}"),
            (self.epochs >= 1, f"finetune.epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"finetune.lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"finetune.batch_size must be >= 1, got {self.batch_size}"),
            (0.0 <= self.warmup_share < 1.0, "finetune.warmup_share must be in [0, 1)"),
            (self.max_grad_norm >= 0, "finetune.max_grad_norm must be >= 0"),
            (0.0 <= self.val_share < 1.0, f"finetune.val_share must be in [0, 1), got "
                                          f"{self.val_share}"),
            (self.min_val_users >= 1, "finetune.min_val_users must be >= 1"),
            (bool(self.views) and set(self.views) <= {"user", "item"},
             f"finetune.views must be a non-empty subset of user, item; got {list(self.views)}"),
            (self.max_liked is None or self.max_liked >= 0, "finetune.max_liked must be >= 0"),
            (self.answer in ("label", "first_token"),
             f"finetune.answer must be label or first_token, got {self.answer!r}"),
            (self.threads >= 0, "finetune.threads must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class FinetuneConfig:
    """A settings file for ``finetune-rater``: the table ``[finetune]``."""

    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)


def load_finetune_settings(path: str | Path | None,
                           overrides: dict[str, Any] | None = None) -> FinetuneSettings:
    """Defaults < TOML file (``[finetune]``; a ``[probe]`` table beside it is the probe's) <
    flags (``{"finetune.epochs": 2}``)."""
    return load_config(FinetuneConfig, path, overrides, ignore=("probe",)).finetune
