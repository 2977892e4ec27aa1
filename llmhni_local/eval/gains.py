"""Comparing methods over users: paired bootstrap intervals of a difference, and where a
curve of a method against a rater's quality crosses a reference (the break-even point).

Pure functions of per-user metric arrays; the report, the benches and ``rater assess`` use
them. Each resamples users (the unit a recommender is evaluated on), seeded; the resampling and
the percentile interval are :mod:`llmhni_local.eval.stats`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmhni_local.eval.stats import bootstrap_indices, percentile_interval


def crossing(xs: np.ndarray, diffs: np.ndarray) -> np.ndarray:
    """The lowest ``x`` where ``diffs`` reaches 0, by linear interpolation between grid points.

    ``xs`` is an increasing grid, ``diffs`` ``(..., len(xs))``. Per row: ``xs[0]`` when the
    first point is already >= 0 (the crossing is at or below the grid), ``inf`` when no point
    is, else the interpolated zero between the first point >= 0 and the one before it.

    Example:
        >>> crossing(np.array([0.5, 0.6, 0.7]), np.array([[-0.02, -0.01, 0.01], [0.0, 1, 1]]))
        array([0.65, 0.5 ])
    """
    xs = np.asarray(xs, dtype=np.float64)
    d = np.atleast_2d(np.asarray(diffs, dtype=np.float64))
    up = d >= 0
    first = up.argmax(axis=1)
    rows = np.arange(len(d))
    prev = np.maximum(first - 1, 0)
    d0, d1 = d[rows, prev], d[rows, first]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = xs[prev] + (xs[first] - xs[prev]) * (-d0) / (d1 - d0)
    x = np.where(first == 0, xs[0], x)
    return np.where(up.any(axis=1), x, np.inf)


def break_even(xs: np.ndarray, curve: np.ndarray, reference: np.ndarray, *, n_boot: int = 1000,
               seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The lowest rater quality at which a method matches a reference, with a bootstrap
    interval over users.

    ``curve`` is ``(len(xs), users)``: per grid point (e.g. a simulated rater's AUC) each test
    user's metric, averaged over seeds; ``reference`` ``(users,)`` the same users' metric for
    the reference (LLMHNI without denoising). The break-even is :func:`crossing` of the mean
    differences. Users are resampled with replacement ``n_boot`` times (the same resample for
    every grid point and the reference, so the comparison stays paired) and the crossing is
    recomputed each time; the interval is the percentile interval, its ends taken as grid
    values or ``inf`` (no crossing in that resample).

    Returns:
        ``{"x", "lo", "hi", "at_grid_start", "reached", "unreached_share", "n_users",
        "n_boot"}``; ``x`` is ``inf`` when the curve never reaches the reference.

    Example:
        >>> r = break_even(np.array([0.5, 1.0]), np.array([[0.1, 0.1], [0.3, 0.3]]),
        ...                np.array([0.2, 0.2]), n_boot=50)
        >>> r["x"], r["lo"], r["hi"]
        (0.75, 0.75, 0.75)
    """
    xs = np.asarray(xs, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if curve.ndim != 2 or curve.shape != (len(xs), len(ref)) or len(ref) == 0:
        raise ValueError(f"break_even: curve {curve.shape} must be (grid {len(xs)}, users "
                         f"{len(ref)}) with at least one user")
    if np.any(np.diff(xs) <= 0):
        raise ValueError("break_even: the grid must increase")
    x = float(crossing(xs, curve.mean(axis=1) - ref.mean())[0])
    idx = bootstrap_indices(len(ref), n_boot, seed)
    diffs = curve[:, idx].mean(axis=2).T - ref[idx].mean(axis=1)[:, None]  # (n_boot, grid)
    boot = crossing(xs, diffs)
    # nearest-rank ends: an unreached resample (inf) may be an end, never averaged with one
    lo, hi = percentile_interval(boot, level, nearest_rank=True)
    return {"x": x, "lo": lo, "hi": hi, "at_grid_start": bool(x == xs[0]),
            "reached": bool(np.isfinite(x)), "unreached_share": float(np.isinf(boot).mean()),
            "n_users": int(len(ref)), "n_boot": int(n_boot)}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Paired difference of two methods' per-user metrics, with a bootstrap-over-users CI.

    ``a`` and ``b`` hold one row per seed (the same seeds) and one column per test user (the
    same users, same order). Each user's difference is averaged over the seeds, ``d_u =
    mean_s(a[s, u] - b[s, u])``; the statistic is ``mean_u d_u`` (the difference of the two
    mean metrics). Users are resampled with replacement ``n_boot`` times; the interval is the
    percentile interval of the resampled means. Resampling users, not seeds, because users are
    the sampling unit of the test set; averaging the seeds first keeps seed noise in ``d_u``.

    Returns:
        ``{"diff": ..., "lo": ..., "hi": ..., "n_users": ..., "n_seeds": ...}``.

    Example:
        >>> r = paired_bootstrap(np.array([[0.3, 0.5]]), np.array([[0.1, 0.3]]))
        >>> round(r["diff"], 6), round(r["lo"], 6), round(r["hi"], 6)
        (0.2, 0.2, 0.2)
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape or a.shape[1] == 0:
        raise ValueError(f"paired_bootstrap: shapes {a.shape} and {b.shape} must match and hold "
                         "at least one user")
    if not 0 < level < 1 or n_boot <= 0:
        raise ValueError("paired_bootstrap: level must be in (0, 1) and n_boot > 0")
    d = (a - b).mean(axis=0)
    means = d[bootstrap_indices(len(d), n_boot, seed)].mean(axis=1)
    lo, hi = percentile_interval(means, level)
    return {"diff": float(d.mean()), "lo": lo, "hi": hi,
            "n_users": int(len(d)), "n_seeds": int(a.shape[0])}


def drop_rate(noisy: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Drop Rate: the share of Recall@K a method loses when noise is added,
    ``1 - R(noise r) / R(noise 0)``, paired by seed, as mean ± sample std over the seeds.

    ``noisy`` and ``clean`` hold one figure per seed, the same seeds in the same order (a
    method's test Recall@20 at noise ``r`` and on the data as given). A negative value is a
    method that did better with the added noise.

    Example:
        >>> r = drop_rate(np.array([0.18, 0.19]), np.array([0.20, 0.20]))
        >>> round(r["mean"], 4), round(r["std"], 4), r["n_seeds"]
        (0.075, 0.0354, 2)
    """
    noisy = np.asarray(noisy, dtype=np.float64).ravel()
    clean = np.asarray(clean, dtype=np.float64).ravel()
    if noisy.shape != clean.shape or not len(clean):
        raise ValueError(f"drop_rate: {noisy.shape} and {clean.shape} must be the same seeds")
    if (clean <= 0).any():
        raise ValueError("drop_rate: a clean figure is 0; the drop is undefined")
    per_seed = 1.0 - noisy / clean
    std = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0
    return {"mean": float(per_seed.mean()), "std": std, "n_seeds": int(len(per_seed))}
