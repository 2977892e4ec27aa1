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

Two forms, both needing explicit settings:

* **error rate** (:func:`simulate_verdicts`): the true verdict flipped with probability
  ``error_rate``;
* **AUC** (:func:`simulate_scores`, :func:`simulate_auc_verdicts`): a *score* per observed
  candidate from a binormal model, clean ~ N(d, 1) and noisy ~ N(0, 1) with
  ``d = sqrt(2) * Phi^-1(auc)``, so a clean pair outscores a noisy one with probability
  ``auc`` (``auc = 1``: every noisy score below every clean one). The scores then go through
  a verdict rule supplied by the caller (the pipeline passes the ``[verdicts]`` threshold
  rule, a share or taus from audits), as a real rater's scores do. Binormal because it is the
  usual model of a ROC curve (two Gaussians of equal spread), it has one parameter, and its
  AUC has the closed form above.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable

import numpy as np

from llmhni_local.core.errors import ConfigError, DataError
from llmhni_local.core.io import atomic_path, jsonable, write_json
from llmhni_local.eval.stats import auc as empirical_auc
from llmhni_local.llmhni.denoise import VERDICT_DTYPE
from llmhni_local.verdicts.decide import Audits, audited_truth, choose_taus
from llmhni_local.verdicts.rules import VerdictSettings


def simulate_verdicts(candidates, train_edges: np.ndarray, train_noise: np.ndarray, *,
                      error_rate: float, seed: int) -> tuple[np.ndarray, dict]:
    """Verdicts of a rater that knows the noise flags and errs at ``error_rate``.

    Args:
        candidates: rows with ``user``, ``item`` and ``kind`` (a candidates structured array
            from :mod:`llmhni_local.llmhni.candidates`, or a DataFrame).
        train_edges: ``(E, 2)`` training pairs.
        train_noise: ``(E,)`` ground-truth noise flag of each training pair.
        error_rate: probability of flipping each verdict, in [0, 1]. No default.
        seed: seed of the flips. No default.

    Returns:
        ``(verdicts, summary)``: a :data:`~llmhni_local.llmhni.denoise.VERDICT_DTYPE` array
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
    users, items, obs, truly_noisy, skipped = observed_truth(candidates, train_edges, train_noise)

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
        "skipped_unobserved": skipped,
        "truly_noisy": int(truly_noisy.sum()),
        "flipped": int(flipped.sum()),
        "realised_error_rate": float(flipped.mean()) if len(obs) else 0.0,
    }
    return out, summary


def observed_truth(candidates, train_edges: np.ndarray, train_noise: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(users, items, obs, truly_noisy, skipped)``: the candidates' users and items, the rows
    of the observed ones, the ground-truth noise flag of each observed one (a pair listed twice
    in train is noisy if any copy is flagged) and the number of unobserved candidates, which
    get no simulated verdict (module docstring)."""
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
    flag_by_key = np.zeros(len(sorted_keys), dtype=bool)
    np.logical_or.at(flag_by_key, np.searchsorted(sorted_keys, e_keys), noise)
    truly_noisy = flag_by_key[at] if len(obs) else np.zeros(0, dtype=bool)
    return users, items, obs, truly_noisy, int(len(kinds) - len(obs))


#: Row layout of :func:`simulate_scores`: one row per observed candidate.
SCORE_DTYPE = np.dtype([("user", np.int64), ("item", np.int64), ("score", np.float64),
                        ("truly_noisy", np.bool_)])

BINORMAL_TEXT = "binormal: clean ~ N(d, 1), noisy ~ N(0, 1), d = sqrt(2) * Phi^-1(auc)"


def binormal_separation(auc: float) -> float:
    """``d = sqrt(2) * Phi^-1(auc)``, the mean gap of the binormal model whose AUC is ``auc``
    (``inf`` at 1: :func:`simulate_scores` then separates the draws outright).

    Example:
        >>> binormal_separation(0.5), round(binormal_separation(0.76025), 3)
        (0.0, 1.0)
    """
    auc = float(auc)
    if not 0.5 <= auc <= 1.0:
        raise ConfigError(f"pipeline.simulated_auc must be in [0.5, 1], got {auc}")
    return math.inf if auc == 1.0 else math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def simulate_scores(candidates, train_edges: np.ndarray, train_noise: np.ndarray, *,
                    auc: float, seed: int) -> tuple[np.ndarray, dict]:
    """A score per observed candidate whose AUC between truly clean and truly noisy pairs is
    ``auc`` (higher: more likely clean, as a rater's High score).

    Every pair draws ``z ~ N(0, 1)``; a clean pair's score is ``z + d``, a noisy pair's ``z``,
    with ``d = sqrt(2) * Phi^-1(auc)`` (:func:`binormal_separation`). At ``auc = 1`` the model
    has no finite ``d``; ``d`` is then the range of the draws plus one, so every noisy score is
    below every clean one and a threshold at the true share reproduces the exact rater.

    Args:
        candidates: rows with ``user``, ``item`` and ``kind`` (as :func:`simulate_verdicts`).
        train_edges: ``(E, 2)`` training pairs.
        train_noise: ``(E,)`` ground-truth noise flag of each training pair.
        auc: the AUC, in [0.5, 1]. No default.
        seed: seed of the draws. No default.

    Returns:
        ``(scored, summary)``: a :data:`SCORE_DTYPE` array in candidate order, and a summary
        with ``simulated: True``, ``auc``, the realised AUC of the draws (``realised_auc``,
        NaN when one class is absent), the separation used and the counts.

    Example:
        >>> c = np.array([(0, 1, "observed"), (0, 2, "observed"), (0, 3, "unobserved")],
        ...              dtype=[("user", int), ("item", int), ("kind", "U10")])
        >>> s, info = simulate_scores(c, np.array([[0, 1], [0, 2]]), np.array([True, False]),
        ...                           auc=1.0, seed=0)
        >>> bool(s["score"][0] < s["score"][1]), info["realised_auc"], info["skipped_unobserved"]
        (True, 1.0, 1)
    """
    d = binormal_separation(auc)
    users, items, obs, truly_noisy, skipped = observed_truth(candidates, train_edges, train_noise)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(len(obs))
    if math.isinf(d):  # any gap wider than the draws' range separates them exactly
        d = float(np.ptp(z)) + 1.0 if len(z) else 1.0
    out = np.empty(len(obs), dtype=SCORE_DTYPE)
    out["user"], out["item"] = users[obs], items[obs]
    out["score"] = z + d * ~truly_noisy
    out["truly_noisy"] = truly_noisy
    summary = {
        "simulated": True,
        "auc": float(auc),
        "model": BINORMAL_TEXT,
        "separation": float(d),
        "seed": int(seed),
        "judged_observed": int(len(obs)),
        "skipped_unobserved": skipped,
        "truly_noisy": int(truly_noisy.sum()),
    }
    realised = empirical_auc(out["score"], ~truly_noisy)  # clean pairs are the positives
    summary["realised_auc"] = realised if math.isfinite(realised) else None  # one class absent
    return out, summary


#: ``decide(scored) -> (says_hard, info)``: a verdict rule on :data:`SCORE_DTYPE` rows.
ScoreRule = Callable[[np.ndarray], tuple[np.ndarray, dict]]


def simulate_auc_verdicts(candidates, train_edges: np.ndarray, train_noise: np.ndarray, *,
                          auc: float, seed: int, decide: ScoreRule) -> tuple[np.ndarray, dict]:
    """Verdicts of the AUC-graded simulated rater: :func:`simulate_scores`, then ``decide``.

    ``decide`` is the verdict rule, given by the caller because rules live above this room
    (the pipeline passes the ``[verdicts]`` threshold rule: a tau at a share of the scores, or
    taus from audits). Unobserved candidates get no verdict, as with :func:`simulate_verdicts`.

    Returns:
        ``(verdicts, summary)``: a :data:`~llmhni_local.llmhni.denoise.VERDICT_DTYPE` array
        (``p_hard`` NaN, ``simulated`` True) and the summary of :func:`simulate_scores` with
        what the rule used (``verdict_rule``), the realised shares called hard and noisy, and
        the share of verdicts that disagree with the noise flags (``realised_error_rate``).
    """
    scored, summary = simulate_scores(candidates, train_edges, train_noise, auc=auc, seed=seed)
    says_hard, info = decide(scored)
    says_hard = np.asarray(says_hard, dtype=bool)
    if says_hard.shape != scored.shape:
        raise ValueError(f"simulate_auc_verdicts: the rule gave {says_hard.shape} verdicts for "
                         f"{scored.shape} scores")
    out = np.empty(len(scored), dtype=VERDICT_DTYPE)
    out["user"], out["item"] = scored["user"], scored["item"]
    out["kind"] = "observed"
    out["verdict"] = np.where(says_hard, "hard", "noisy")
    out["p_hard"] = np.nan
    out["simulated"] = True
    n = max(len(scored), 1)
    summary.update(verdict_rule=info, share_hard=float(says_hard.sum() / n),
                   share_noisy=float((~says_hard).sum() / n),
                   realised_error_rate=float((says_hard == scored["truly_noisy"]).sum() / n))
    return out, summary


def write_simulated_verdicts(path: str | Path, verdicts: np.ndarray, summary: dict) -> None:
    """Write the verdicts as parquet (with its ``simulated`` column) and the summary beside it
    as ``<name>.json``; both atomically. Refuses a table or summary not marked simulated."""
    import pandas as pd

    if summary.get("simulated") is not True or not bool(np.all(verdicts["simulated"])):
        raise DataError("write_simulated_verdicts: every row and the summary must be marked "
                        "simulated")
    path = Path(path)
    with atomic_path(path) as tmp:
        pd.DataFrame({n: verdicts[n] for n in VERDICT_DTYPE.names}).to_parquet(
            tmp, index=False, engine="pyarrow")
    write_json(path.with_suffix(".json"), {**summary, "simulated": True,
                                           "verdicts_file": path.name})


def threshold_decider(s: VerdictSettings, audits: Audits
                      ) -> Callable[[np.ndarray], tuple[np.ndarray, dict]]:
    """The ``[verdicts]`` threshold rule as a function of the AUC-graded simulated rater's
    scores (:func:`simulate_auc_verdicts`), given the run's audited labels.

    The simulated rater gives one score per pair; it enters the threshold rule as both views'
    High score, so the rule's own tau code (``verdicts.decide.choose_taus``: ``tau_from_share`` at
    ``verdicts.target_share``, or the taus with the best kappa on the run's audited pairs,
    with its ``min_audits`` check and cross-fitted kappa) decides, exactly as for a real
    rater's scores. ``target_share`` is the share of observed candidates called hard (kept);
    ``1 - target_share`` is called noisy."""
    import pandas as pd

    if s.rule != "threshold" or s.calibration != "none":
        raise ConfigError(f"pipeline.simulated_auc draws a score per pair, not labels or label "
                          f"probabilities: it needs verdicts.rule = 'threshold' and "
                          f"verdicts.calibration = 'none' (got {s.rule!r}, {s.calibration!r})")

    def decide(scored: np.ndarray) -> tuple[np.ndarray, dict]:
        table = pd.DataFrame({"user": scored["user"], "item": scored["item"],
                              "verdict": "noisy"})  # every observed candidate is judged
        pairs = zip(table["user"].astype(int), table["item"].astype(int))
        fit = ~np.array([p in audits.trained for p in pairs], dtype=bool)
        truth, audit_info = audited_truth(table, audits, fit)
        info: dict[str, Any] = {"rule": "threshold", "calibration": "none",
                                "score": "the simulated rater's binormal score, as both views'"}
        score = scored["score"].astype(np.float64)
        taus = choose_taus({"user": score, "item": score}, s, fit, truth, audit_info, info,
                           users=table["user"].to_numpy(np.int64))
        hard = (score >= taus["user"]) & (score >= taus["item"])
        info["realised_share_high"] = float(hard[fit].mean()) if fit.any() else None
        return hard, jsonable(info)

    return decide
