"""The run's tuning users, the held-out users and the sample drawn from their pairs, with its
labels (docs/DESIGN.md, "Assessing a rater")."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmhni_local.assess.settings import (
    MIN_PER_CLASS,
    RUN_TABLES,
    TUNE_PROBE_PAIRS,
    AssessSettings,
)
from llmhni_local.audit.records import AUDIT_DB, AuditStore, audit_dir
from llmhni_local.audit.simulated_audits import label_from_rating
from llmhni_local.core.errors import UserError
from llmhni_local.judgments.plan import RATING_MANIFEST
from llmhni_local.judgments.store import STORE_NAME
from llmhni_local.llmhni.candidates import CANDIDATE_DTYPE, CANDIDATES_FILE
from llmhni_local.stages.plan import TUNE_PROBE_DIR
from llmhni_local.stages.rec_pre import score_fn_from_matrix, score_fn_from_run

if TYPE_CHECKING:
    from llmhni_local.data.dataset import Interactions
    from llmhni_local.engine.settings import RaterSettings


def check_run(run_dir: str | Path) -> None:
    """The run must have candidates and judgments (one line naming what is missing)."""
    run_dir = Path(run_dir)
    if not (run_dir / CANDIDATES_FILE).is_file():
        raise UserError(f"{run_dir / CANDIDATES_FILE}: no candidates here; rater assess "
                        "needs a run with candidates and judgments (run `run` or `candidates` "
                        "and `rate` first)")
    for name in (STORE_NAME, RATING_MANIFEST):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir / name}: no judgments here; rater assess needs a run "
                            "whose candidates were rated (run `rate` first)")


def run_overrides(run_dir: str | Path) -> dict[str, Any]:
    """The run's recorded settings of :data:`RUN_TABLES` (``RUN/manifest.json``), dotted; empty
    without a manifest. ``rater assess`` takes them in place of a ``--config`` file."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text()).get("settings", {})
    return {f"{table}.{key}": value for table in RUN_TABLES
            if isinstance(saved.get(table), dict) for key, value in saved[table].items()}


def assessed_rater(run_dir: str | Path, rater: RaterSettings, tune_kind: str) -> RaterSettings:
    """The rater to assess: ``[rater]``, with the run's own probe (``RUN/tune/probe``) as its
    adapter when ``tune.kind = "probe"`` and no adapter is set (as the rate stage does)."""
    if tune_kind == "probe" and not rater.adapter:
        folder = Path(run_dir) / TUNE_PROBE_DIR
        if not folder.is_dir():
            raise UserError(f"{folder}: tune.kind = 'probe' but the run has no tuned probe; run "
                            "the pipeline's tune stage, or pass --adapter")
        return dataclasses.replace(rater, adapter=str(folder))
    return rater


def _pairs_file(path: Path) -> set[tuple[int, int]]:
    """Every pair of a ``pairs.json`` (its training and validation lists)."""
    if not path.is_file():
        return set()
    doc = json.loads(path.read_text())
    lists = doc.values() if isinstance(doc, dict) else [doc]
    return {(int(p[0]), int(p[1])) for pairs in lists if isinstance(pairs, list) for p in pairs}


def tuning_pairs(run_dir: str | Path,
                 adapter: str | None = None) -> dict[str, set[tuple[int, int]]]:
    """Pairs that tuned anything, by where they are recorded: the audit store's
    ``finetune_pairs`` (every role), the run's ``tune/probe/pairs.json`` and the assessed
    adapter's ``pairs.json`` (LoRA or probe)."""
    run_dir = Path(run_dir)
    out: dict[str, set[tuple[int, int]]] = {}
    if (audit_dir(run_dir) / AUDIT_DB).is_file():
        with AuditStore(run_dir, create=False) as store:
            out["audit store finetune_pairs"] = store.finetune_pairs()
    out[TUNE_PROBE_PAIRS] = _pairs_file(run_dir / TUNE_PROBE_PAIRS)
    if adapter:
        out[f"{Path(adapter).name}/pairs.json"] = _pairs_file(Path(adapter).expanduser()
                                                              / "pairs.json")
    return {k: v for k, v in out.items() if v}


def run_audits(run_dir: str | Path):
    """The run's audited labels (user, item, label, simulated); empty without an audit store."""
    import pandas as pd

    if not (audit_dir(run_dir) / AUDIT_DB).is_file():
        return pd.DataFrame({"user": [], "item": [], "label": [], "simulated": []})
    with AuditStore(run_dir, create=False) as store:
        return store.labels()[["user", "item", "label", "simulated"]]


def rec_pre_score_fn(run_dir: str | Path, data: Interactions) -> Callable[[np.ndarray], np.ndarray]:
    """``score_fn(users)`` of the recommender that chose the run's candidates: the source
    ``candidates.json`` names (a trained run folder or a ``.npy`` score matrix), else
    ``RUN/rec_pre``."""
    run_dir = Path(run_dir)
    info = run_dir / "candidates.json"
    tried = []
    if info.is_file():
        source = json.loads(info.read_text()).get("source")
        if source:
            path = Path(source)
            if path.suffix == ".npy" and path.is_file():
                return score_fn_from_matrix(path, data)
            if (path / "model.pt").is_file():
                return score_fn_from_run(path, data)
            tried.append(str(path))
    if (run_dir / "rec_pre" / "model.pt").is_file():
        return score_fn_from_run(run_dir / "rec_pre", data)
    tried.append(str(run_dir / "rec_pre"))
    raise UserError(f"{run_dir}: no Rec_pre scores (tried {', '.join(tried)}); rater assess "
                    "needs the recommender that chose the candidates (a trained run folder or "
                    "a .npy score matrix)")


# ---------------------------------------------------------------------------- the sample
def ground_truth(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)`` masks over the training pairs: rated >= 3 and rated <= 2 (natural
    noise) where the data has ratings, else not flagged and flagged by ``train_noise``."""
    if data.train_rating is not None:
        r = np.asarray(data.train_rating, dtype=np.float64)
        rated = np.isfinite(r)  # pairs synthetic noise injects have none
        return rated & (r > 2), rated & (r <= 2)
    if data.train_noise is not None:
        noisy = np.asarray(data.train_noise, dtype=bool)
        return ~noisy, noisy
    raise UserError(f"{data.name}: rater assess needs ratings or ground-truth noise flags to "
                    "tell noisy training pairs from clean ones; the data has neither")


def held_out_users(data: Interactions, tuning: dict[str, set[tuple[int, int]]]) -> np.ndarray:
    """Users with training pairs and no pair in any tuning set (sorted)."""
    tuned = {u for pairs in tuning.values() for u, _ in pairs}
    users = np.unique(np.asarray(data.train[:, 0], dtype=np.int64))
    held = np.array([u for u in users if int(u) not in tuned], dtype=np.int64)
    if not len(held):
        raise UserError(f"rater assess: no held-out users left: all {len(users)} users with "
                        f"training pairs have pairs in a tuning set ("
                        + ", ".join(f"{k}: {len({u for u, _ in v})} users"
                                    for k, v in tuning.items()) + ")")
    return held


def draw_users(held: np.ndarray, audited_users: set[int], n: int, rng) -> np.ndarray:
    """``n`` of the held-out users, those with audited pairs first, each group shuffled."""
    first = np.array([u for u in held if int(u) in audited_users], dtype=np.int64)
    rest = np.array([u for u in held if int(u) not in audited_users], dtype=np.int64)
    order = np.concatenate([rng.permutation(first), rng.permutation(rest)])
    return np.sort(order[:n])


def synthetic_pairs(data: Interactions, users: np.ndarray, n: int, rng,
                    max_tries: int = 100) -> list[tuple[int, int]]:
    """Up to ``n`` distinct random pairs seen in no split, each user drawn from ``users``
    (with repeats: a user appears as often as it is drawn)."""
    seen = {(int(u), int(i)) for part in (data.train, data.val, data.test) for u, i in part}
    out: dict[tuple[int, int], None] = {}
    for _ in range(max_tries * max(n, 1)):
        if len(out) >= n:
            break
        p = (int(rng.choice(users)), int(rng.integers(data.n_items)))
        if p not in seen:
            out[p] = None
    return list(out)


def draw_sample(data: Interactions, users: np.ndarray, settings: AssessSettings, audits,
                rng):
    """The sample frame: ``user, item, cls, kind, rating, label, label_source, simulated``
    (one row per pair; see the module docstring for the classes and labels)."""
    import pandas as pd

    clean, noisy = ground_truth(data)
    in_users = np.isin(data.train[:, 0], users)
    audited = {(int(u), int(i)): (str(lab), bool(sim)) for u, i, lab, sim in
               zip(audits["user"], audits["item"], audits["label"], audits["simulated"])}
    rows = []
    picked: dict[str, list[int]] = {}
    for cls, mask in (("clean", clean), ("noisy", noisy)):
        idx = np.flatnonzero(mask & in_users)
        is_audited = np.array([(int(data.train[k, 0]), int(data.train[k, 1])) in audited
                               for k in idx], dtype=bool)
        order = np.concatenate([rng.permutation(idx[is_audited]),
                                rng.permutation(idx[~is_audited])])
        picked[cls] = order[:settings.sample].tolist()
        _enough(cls, len(picked[cls]), len(users))
        for k in picked[cls]:
            u, i = int(data.train[k, 0]), int(data.train[k, 1])
            rating = (float(data.train_rating[k]) if data.train_rating is not None
                      else math.nan)
            if (u, i) in audited:
                label, sim = audited[(u, i)]
                source = "audit"
            elif math.isfinite(rating):
                label, sim, source = label_from_rating(rating), True, "simulated from rating"
            else:
                label, sim, source = None, False, "none"
            rows.append((u, i, cls, "observed", rating, label, source, sim))
    clean_users = data.train[picked["clean"], 0].astype(np.int64)
    for u, i in synthetic_pairs(data, clean_users, settings.sample, rng):
        rows.append((u, i, "synthetic", "unobserved", math.nan, None, "none", False))
    _enough("synthetic", sum(r[2] == "synthetic" for r in rows), len(users))
    frame = pd.DataFrame(rows, columns=["user", "item", "cls", "kind", "rating", "label",
                                        "label_source", "simulated"])
    return frame.sort_values(["user", "item"], kind="stable").reset_index(drop=True)


def _enough(cls: str, n: int, n_users: int) -> None:
    if n < MIN_PER_CLASS:
        raise UserError(f"rater assess: the sample leaves {n} {cls} pairs among the {n_users} "
                        f"held-out users drawn, fewer than the {MIN_PER_CLASS} the figures need "
                        "(raise --users)")


def sample_candidates(sample, score_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The sample as a candidate array (``kind``: observed, or unobserved for synthetic
    pairs; ``score``: Rec_pre's), sorted by user then item."""
    users = sample["user"].to_numpy(np.int64)
    items = sample["item"].to_numpy(np.int64)
    c = np.zeros(len(sample), dtype=CANDIDATE_DTYPE)
    c["user"], c["item"], c["kind"] = users, items, sample["kind"].to_numpy(str)
    uniq, inv = np.unique(users, return_inverse=True)
    scores = np.asarray(score_fn(uniq), dtype=np.float64)
    c["score"] = scores[inv, items]
    return c
