"""Loss functions as pure functions of scores and embeddings.

BPR goes through ``F.logsigmoid`` and InfoNCE through ``F.cross_entropy``: both stay finite
for any score, unlike ``log(sigmoid(x) + eps)`` or ``exp(x) / sum(exp(x))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    r"""Per-pair BPR loss :math:`-\log \sigma(s^+ - s^-)` (no reduction)."""
    return -F.logsigmoid(pos - neg)


def truncated(pos: torch.Tensor, neg: torch.Tensor, drop_rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """T-CE in pairwise form: mean BPR over the pairs left after dropping the
    ``drop_rate`` share with the largest loss (Wang et al., "Denoising Implicit Feedback").

    Returns ``(loss, kept_mask)``.
    """
    losses = bpr(pos, neg)
    n_keep = len(losses) - int(drop_rate * len(losses))
    keep = torch.zeros_like(losses, dtype=torch.bool)
    keep[torch.argsort(losses.detach())[:n_keep]] = True
    return losses[keep].mean(), keep


def tce_drop_rate(epoch: int, max_drop: float, warmup: int) -> float:
    """T-CE's schedule: the drop rate rises linearly from 0 to ``max_drop`` over ``warmup`` epochs."""
    if warmup <= 0:
        return max_drop
    return max_drop * min(1.0, (epoch - 1) / warmup)


def warmup_scale(epoch: int, warmup: int) -> float:
    """Share of a term's weight at ``epoch`` (1-based) under a linear warm-up over ``warmup``
    epochs: ``min(1, (epoch - 1) / warmup)``; 1 when ``warmup`` is 0.

    Example:
        >>> [warmup_scale(e, 4) for e in (1, 3, 5, 9)], warmup_scale(1, 0)
        ([0.0, 0.5, 1.0, 1.0], 1.0)
    """
    return 1.0 if warmup <= 0 else min(1.0, max(0, epoch - 1) / warmup)


def reweighted(pos: torch.Tensor, neg: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""R-CE in pairwise form: BPR weighted by :math:`\sigma(s^+ - s^-)^{\alpha}` (no gradient
    through the weight), so pairs the model finds implausible weigh less.

    This follows R-CE's intent (down-weight large-loss samples, Wang et al. 2021); docs/METHOD.md
    writes the weight as :math:`\sigma(-(s^+ - s^-))^{\alpha}`, which would up-weight them — we
    read that as a sign slip (see docs/DESIGN.md).
    """
    weight = torch.sigmoid(pos - neg).detach().pow(alpha)
    return (weight * bpr(pos, neg)).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""InfoNCE between row-aligned views: row ``k`` of ``a`` and of ``b`` are positives,
    other rows of ``b`` are the negatives.

    .. math:: -\frac{1}{n}\sum_k \log \frac{\exp(\cos(a_k, b_k)/\tau)}{\sum_j \exp(\cos(a_k, b_j)/\tau)}
    """
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def l2_penalty(*tensors: torch.Tensor) -> torch.Tensor:
    """Half the squared norm of the given (layer-0) embeddings, averaged over the batch."""
    n = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / (2 * n)
