"""A simulated rater, for studying how rater quality moves the end metric.

It is never a default: every entry point needs an explicit ``error_rate`` and ``seed``, and
everything it produces is marked ``simulated=True`` (a column of the verdict table and a key
of any JSON it writes).

What "correct" means, and why only observed candidates are judged:

* an **observed** candidate (a training edge) is truly *noisy* when the data's ground-truth
  noise flag (``Interactions.train_noise``: rated <= 2 under natural noise, injected under
  synthetic noise) is set, and truly *hard* otherwise. The rater gives the true verdict, flipped
  independently with probability ``error_rate`` (so it errs at that rate in expectation, and
  never at ``error_rate = 0``);
* an **unobserved** candidate would be truly hard if the user would like the item, which only
  the held-out (validation / test) interactions could tell. Reading them would leak the test
  set into training, so the simulated rater returns **no verdict** for unobserved candidates:
  with it, G' only loses edges. Their number is reported as ``skipped_unobserved``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmhni_local.errors import ConfigError, DataError
from llmhni_local.method.denoise import VERDICT_DTYPE


def simulate_verdicts(candidates, train_edges: np.ndarray, train_noise: np.ndarray, *,
                      error_rate: float, seed: int) -> tuple[np.ndarray, dict]:
    """Verdicts of a rater that knows the noise flags and errs at ``error_rate``.

    Args:
        candidates: rows with ``user``, ``item`` and ``kind`` (a candidates structured array
            from :mod:`llmhni_local.method.candidates`, or a DataFrame).
        train_edges: ``(E, 2)`` training pairs.
        train_noise: ``(E,)`` ground-truth noise flag of each training pair.
        error_rate: probability of flipping each verdict, in [0, 1]. No default.
        seed: seed of the flips. No default.

    Returns:
        ``(verdicts, summary)``: a :data:`~llmhni_local.method.denoise.VERDICT_DTYPE` array
        with one row per observed candidate (``p_hard`` is NaN: the simulated rater has no
        probabilities; ``simulated`` is True), and a summary dict with ``simulated: True``,
        the settings, the counts and the realised error rate.

    Example:
        >>> c = np.array([(0, 1, "observed"), (0, 2, "unobserved")],
        ...              dtype=[("user", int), ("item", int), ("kind", "U10")])
        >>> v, info = simulate_verdicts(c, np.array([[0, 1]]), np.array([True]),
        ...                             error_rate=0.0, seed=0)
        >>> v["verdict"].tolist(), bool(v["simulated"].all()), info["skipped_unobserved"]
        (['noisy'], True, 1)
    """
    if not 0.0 <= float(error_rate) <= 1.0:
        raise ConfigError(f"simulated rater: error_rate must be in [0, 1], got {error_rate}")
    users = np.asarray(candidates["user"], dtype=np.int64)
    items = np.asarray(candidates["item"], dtype=np.int64)
    kinds = np.asarray(candidates["kind"]).astype(str)
    bad = np.flatnonzero(~np.isin(kinds, ("observed", "unobserved")))
    if len(bad):
        raise DataError(f"candidates row {int(bad[0])}: unknown kind {kinds[bad[0]]!r}")
    edges = np.asarray(train_edges, dtype=np.int64).reshape(-1, 2)
    noise = np.asarray(train_noise, dtype=bool)
    if len(noise) != len(edges):
        raise DataError(f"simulated rater: {len(noise)} noise flags for {len(edges)} training edges")

    obs = np.flatnonzero(kinds == "observed")
    big = int(max(edges[:, 1].max(initial=-1), items.max(initial=-1))) + 1
    e_keys = edges[:, 0] * big + edges[:, 1]
    order = np.argsort(e_keys, kind="stable")
    sorted_keys = e_keys[order]
    c_keys = users[obs] * big + items[obs]
    at = np.minimum(np.searchsorted(sorted_keys, c_keys), max(len(sorted_keys) - 1, 0))
    found = (sorted_keys[at] == c_keys) if len(sorted_keys) else np.zeros(len(obs), dtype=bool)
    if not found.all():
        r = int(obs[np.flatnonzero(~found)[0]])
        raise DataError(f"candidates row {r}: observed pair ({users[r]}, {items[r]}) is not a "
                        "training edge")
    # A pair listed twice in train is noisy if any copy is flagged.
    flag_by_key = np.zeros(len(sorted_keys), dtype=bool)
    np.logical_or.at(flag_by_key, np.searchsorted(sorted_keys, e_keys), noise)
    truly_noisy = flag_by_key[at] if len(obs) else np.zeros(0, dtype=bool)

    rng = np.random.default_rng(seed)
    flipped = rng.random(len(obs)) < error_rate
    says_noisy = truly_noisy ^ flipped

    out = np.empty(len(obs), dtype=VERDICT_DTYPE)
    out["user"], out["item"] = users[obs], items[obs]
    out["kind"] = "observed"
    out["verdict"] = np.where(says_noisy, "noisy", "hard")
    out["p_hard"] = np.nan
    out["simulated"] = True
    summary = {
        "simulated": True,
        "error_rate": float(error_rate),
        "seed": int(seed),
        "judged_observed": int(len(obs)),
        "skipped_unobserved": int(len(kinds) - len(obs)),
        "truly_noisy": int(truly_noisy.sum()),
        "flipped": int(flipped.sum()),
        "realised_error_rate": float(flipped.mean()) if len(obs) else 0.0,
    }
    return out, summary


def write_simulated_verdicts(path: str | Path, verdicts: np.ndarray, summary: dict) -> None:
    """Write the verdicts as parquet (with its ``simulated`` column) and the summary beside it
    as ``<name>.json``; both atomically. Refuses a table or summary not marked simulated."""
    import pandas as pd

    from llmhni_local.io import atomic_path, write_json

    if summary.get("simulated") is not True or not bool(np.all(verdicts["simulated"])):
        raise DataError("write_simulated_verdicts: every row and the summary must be marked "
                        "simulated")
    path = Path(path)
    with atomic_path(path) as tmp:
        pd.DataFrame({n: verdicts[n] for n in VERDICT_DTYPE.names}).to_parquet(
            tmp, index=False, engine="pyarrow")
    write_json(path.with_suffix(".json"), {**summary, "simulated": True,
                                           "verdicts_file": path.name})
