"""The assessment's PNG: score distributions per class and ROC curves, per view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.assess.settings import CLASSES
from llmhni_local.core.io import atomic_path
from llmhni_local.judgments.store import VIEWS


def roc_points(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(false positive rate, true positive rate)`` of ``score`` thresholds, from (0, 0) to
    (1, 1); tied scores move in one step.

    >>> [x.tolist() for x in roc_points(np.array([0.9, 0.1, 0.5]), np.array([1, 0, 0]))]
    [[0.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0]]
    """
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    order = np.argsort(-score, kind="stable")
    s, p = score[order], positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # end of each tie group
    tp, fp = np.cumsum(p)[last], np.cumsum(~p)[last]
    n_pos, n_neg = max(int(p.sum()), 1), max(int((~p).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def plot_assess(table, figures: dict[str, Any], path: Path) -> None:
    """Per view: the noise score's distribution for clean, noisy and synthetic pairs (top),
    and the ROC curves of natural and synthetic noise (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(VIEWS), figsize=(11, 8))
    tag = " (SIMULATED labels)" if figures["simulated"] else ""
    for col, view in enumerate(VIEWS):
        noise = -table[f"score_{view}"].to_numpy(np.float64)
        ok = np.isfinite(noise)
        ax = axes[0, col]
        if ok.any():
            lo, hi = np.percentile(noise[ok], [0.5, 99.5])
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
            for cls in CLASSES:
                x = noise[ok & (table["cls"] == cls).to_numpy()]
                if len(x):
                    ax.hist(x, bins=bins, alpha=0.5, density=True, label=f"{cls} ({len(x)})")
        ax.set(xlabel="noise score (minus the rater's score)", ylabel="density",
               title=f"{view} view" + (" — CONSTANT" if view in figures["constant"] else ""))
        ax.legend()
        ax = axes[1, col]
        for task, positive in (("natural", "noisy"), ("synthetic", "synthetic")):
            rows = table["cls"].isin(["clean", positive]).to_numpy() & ok
            if not rows.any():
                continue
            fpr, tpr = roc_points(noise[rows], (table["cls"] == positive).to_numpy()[rows])
            a = figures["views"][view][task].get("auc")
            ax.plot(fpr, tpr, label=f"{task}: {positive} vs clean (AUC "
                                    f"{a:.3f})" if a is not None else task)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(xlabel="false positive rate", ylabel="true positive rate",
               title=f"{view} view: ROC, held-out users{tag}")
        ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
