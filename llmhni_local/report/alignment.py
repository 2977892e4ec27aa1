"""The report's alignment picture: does the alignment MLP put users among items?

Neighbour mixing (``eval/mixing.py``) of the raw and the aligned vectors of ``RUN/align/``, a
warning when the aligned ones stay in two clusters, and a t-SNE map of both spaces
(docs/DESIGN.md, "The alignment picture and the LLM's cost").
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

from llmhni_local.core.errors import DataError, UserError
from llmhni_local.eval.mixing import SPLIT_BELOW, neighbour_mixing, split_apart

#: Points of the 2-D map at most. Every pipeline run draws it in its report stage, so it is kept
#: cheap: Barnes-Hut t-SNE on one thread took 2.0 s a panel for 1,000 points.
MAP_POINTS = 1000


def _load_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as z:
            return z["users"], z["items"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:  # torn, or lacks one
        raise UserError(f"{path}: cannot read arrays 'users' and 'items' ({e})") from None


def plot_alignment_map(spaces: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                       mixing: dict[str, float] | None = None, seed: int = 0) -> None:
    """t-SNE maps (cosine) of users and items, one panel per space (titled with its
    ``mixing``), the same sampled points (at most :data:`MAP_POINTS`, drawn by ``seed``) in
    each."""
    import matplotlib
    from sklearn.manifold import TSNE

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_u, n_i = (len(a) for a in next(iter(spaces.values())))
    rng = np.random.default_rng(seed)
    pick = np.arange(n_u + n_i)
    if len(pick) > MAP_POINTS:
        pick = np.sort(rng.choice(len(pick), MAP_POINTS, replace=False))
    is_item = pick >= n_u
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.5 * len(spaces), 5), squeeze=False)
    for ax, (name, (u, i)) in zip(axes[0], spaces.items()):
        x = np.concatenate([u, i])[pick]
        # Barnes-Hut on one thread: 0.7 s for 300 points and 2.0 s for 1,000 (exact: 1.6 s and
        # 11 s); with its OpenMP threads on cores a training holds, 300 points took 12 s
        with threadpool_limits(1):
            xy = TSNE(2, metric="cosine", init="pca", random_state=seed, max_iter=500,
                      perplexity=min(30.0, (len(x) - 1) / 3)).fit_transform(x)
        for mask, label in ((~is_item, "users"), (is_item, "items")):
            ax.scatter(xy[mask, 0], xy[mask, 1], s=4, alpha=0.6, label=f"{label} ({mask.sum()})")
        mixed = f", mixing {mixing[name]:.3f}" if mixing and name in mixing else ""
        ax.set(title=f"{name} vectors (t-SNE{mixed})", xticks=[], yticks=[])
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def alignment_section(run_dir: Path, plots: Path) -> tuple[list[str], dict[str, Any]]:
    """The report's lines on the alignment (neighbour mixing raw vs aligned, a warning when
    users and items stay apart, the t-SNE map) and its figures; nothing without ``align/``."""
    paths = {name: run_dir / "align" / f"{name}.npz" for name in ("raw", "aligned")}
    if not all(p.is_file() for p in paths.values()):
        return [], {}
    spaces = {name: _load_vectors(p) for name, p in paths.items()}
    counts = {name: (len(u), len(i)) for name, (u, i) in spaces.items()}
    if counts["raw"] != counts["aligned"]:
        raise UserError(f"{paths['aligned']}: {counts['aligned']} users and items, but "
                        f"{paths['raw']} has {counts['raw']} (written by different runs?)")
    mix = {}
    for name, vectors in spaces.items():
        try:
            mix[name] = neighbour_mixing(*vectors)
        except DataError as e:
            raise DataError(f"{paths[name]}: {e}") from None
    out = {**mix, "split": split_apart(mix["aligned"]["mixing"]), "threshold": SPLIT_BELOW}
    plot_alignment_map(spaces, plots / "alignment_map.png",
                       {name: m["mixing"] for name, m in mix.items()})
    a = mix["aligned"]
    lines = ["## The alignment picture", "",
             (f"Neighbour mixing (k = {a['k']}; 1 is as mixed as chance, 0 never a neighbour from "
             f"the other side): raw text vectors {mix['raw']['mixing']:.3f}, aligned "
             f"{a['mixing']:.3f}. Among a user's {a['k']} nearest aligned vectors "
             f"{a['user_side']:.1%} are items (chance {a['user_side_expected']:.1%}); among an "
             f"item's, {a['item_side']:.1%} are users (chance {a['item_side_expected']:.1%})."), ""]
    if out["split"]:
        lines += [(f"**Warning: users and items stay apart after alignment** (mixing "
                  f"{a['mixing']:.3f} < {SPLIT_BELOW}): the cosines LLMHNI reads between a user "
                  "and an item compare two separate clusters."), ""]
    return lines + ["![alignment map](plots/alignment_map.png)", ""], out
