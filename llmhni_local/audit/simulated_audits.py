"""Simulated audits for MovieLens-100K: labels read off the explicit ratings, not a person.

Rule (:data:`RATING_RULE`): a rating >= 4 is **High**, 3 is **Medium**, <= 2 is **Low**.
Every simulated row says so: its ``annotator`` is ``simulated (...rule...)`` and its ``note``
holds the rating, so ``audit import`` stores it as simulated and ``audit report`` marks it.

Only TRAINING ratings are read. A held-out (validation or test) rating is never used as a
label, so nothing a rater is tuned on comes from the data the recommender is evaluated on.
Hence only pairs with a training interaction can be labelled: with ``pool="candidates"`` the
sample is the stratified audit sample of the run's *observed* candidates (unobserved candidates
have no rating to read); with ``pool="train"`` it is a uniform sample of training interactions
that are NOT candidates of the run, for fine-tuning a rater on pairs it will never be asked to
judge in this run's rating stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from llmhni_local.audit.export import _drop_audited, audit_sheet, export_sample
from llmhni_local.core.config import DataSettings, build
from llmhni_local.core.errors import DataError, UserError
from llmhni_local.data import load_data
from llmhni_local.judgments.plan import RateSettings, read_rating_manifest
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
from llmhni_local.text.profiles import data_fingerprint, load_profiles

RATING_RULE = ">= 4 High, 3 Medium, <= 2 Low"
ANNOTATOR = f"simulated (MovieLens rating: {RATING_RULE})"


def label_from_rating(rating: float) -> str:
    """The simulated label of one explicit rating.

    >>> [label_from_rating(r) for r in (5, 4, 3.5, 3, 2.5, 1)]
    ['High', 'High', 'Medium', 'Medium', 'Medium', 'Low']
    """
    r = float(rating)
    if not np.isfinite(r):
        raise DataError(f"rating {rating!r} is not a number")
    if r >= 4:
        return "High"
    if r > 2:  # 3 (and half-stars between 2 and 4 on other scales)
        return "Medium"
    return "Low"


def run_data(run_dir: str | Path, data_settings=None):
    """The data ``RUN``'s profiles were built from, checked by its fingerprint.

    Settings come from ``data_settings``, else the profiles' own record (``profiles`` command),
    else ``RUN/manifest.json`` (``run`` pipeline).
    """
    run_dir = Path(run_dir)
    profiles = load_profiles(run_dir)
    settings = data_settings
    if settings is None and profiles.info.get("data_settings"):
        settings = build(DataSettings, profiles.info["data_settings"], "data")
    if settings is None and (run_dir / "manifest.json").is_file():
        saved = json.loads((run_dir / "manifest.json").read_text()).get("settings", {})
        if isinstance(saved.get("data"), dict):
            settings = build(DataSettings, saved["data"], "data")
    if settings is None:
        raise UserError(f"{run_dir}: cannot tell which data the profiles came from; pass "
                        "--data (and --max-users) as they were built")
    data = load_data(settings)
    if data_fingerprint(data) != profiles.info.get("data"):
        raise UserError(f"{run_dir}: the data ({settings.source}, max_users "
                        f"{settings.max_users}) is not the data the profiles were built from")
    return data, profiles


def training_ratings(data) -> dict[tuple[int, int], float]:
    """``{(user, item): rating}`` of the training interactions (never held-out ones)."""
    if data.train_rating is None:
        raise UserError(f"{data.name}: no explicit ratings; `audit simulate` needs them "
                        "(MovieLens-100K has them)")
    return {(int(u), int(i)): float(r) for (u, i), r in zip(data.train, data.train_rating)}


def simulate_sample(run_dir: str | Path, n: int, *,
                    pool: Literal["candidates", "train"] = "candidates", seed: int = 0,
                    data_settings=None, data=None,
                    allocation: Literal["proportional", "equal"] = "proportional"):
    """A label table (the export's columns, labels filled from training ratings) and a summary.

    Args:
        run_dir: the run folder.
        n: pairs to label (fewer if the pool is smaller).
        pool: ``candidates`` (observed candidates the last rating run rated, stratified as
            ``audit export`` does) or ``train`` (training interactions that are not candidates).
        seed: seed of the draw.
        data_settings: the data the run was built from (found in the run when ``None``).
        data: the loaded data itself (an ``Interactions``; checked against the profiles'
            fingerprint), instead of loading it.
        allocation: strata allocation for ``pool="candidates"``.
    """
    run_dir = Path(run_dir)
    if data is None:
        data, profiles = run_data(run_dir, data_settings)
    else:
        profiles = load_profiles(run_dir)
        if data_fingerprint(data) != profiles.info.get("data"):
            raise UserError(f"{run_dir}: the data given is not the data the profiles were "
                            "built from")
    ratings = training_ratings(data)
    info: dict = {"pool": pool, "rule": RATING_RULE, "seed": seed, "simulated": True}
    if pool == "candidates":
        frame, sample_info = export_sample(run_dir, n, seed=seed, allocation=allocation,
                                           kinds=("observed",))
        info.update(sample_info)
    elif pool == "train":
        frame, extra = _train_pool(run_dir, n, seed, data, profiles)
        info.update(extra)
    else:
        raise UserError(f"audit simulate: --pool must be candidates or train, got {pool!r}")
    values = [ratings.get((int(u), int(i))) for u, i in zip(frame["user"], frame["item"])]
    if any(v is None for v in values):  # an observed candidate is a training pair: cannot be
        raise DataError(f"{run_dir}: a sampled pair has no training rating")
    frame["label"] = [label_from_rating(v) for v in values]
    frame["annotator"] = ANNOTATOR
    frame["labelled_at"] = ""
    frame["note"] = [f"rating {v:g}" for v in values]
    info["labels"] = {lab: int((frame["label"] == lab).sum()) for lab in ("High", "Medium", "Low")}
    info["pairs"] = int(len(frame))
    return frame, info


def _train_pool(run_dir: Path, n: int, seed: int, data, profiles):
    """``(frame, info)``: up to ``n`` training pairs that are not candidates of the run (nor
    audited yet), in the export's columns."""
    import pandas as pd

    exclude: set[tuple[int, int]] = set()
    if (run_dir / CANDIDATES_FILE).is_file():
        c = load_candidates(run_dir / CANDIDATES_FILE)
        exclude = set(zip(c["user"].tolist(), c["item"].tolist()))
    table = pd.DataFrame({"user": data.train[:, 0], "item": data.train[:, 1]})
    # Pairs with no rating (synthetic noise injects them) have nothing to simulate a label
    # from; they are left out and counted, never labelled by their noise flag.
    rated = np.isfinite(np.asarray(data.train_rating, dtype=np.float64))
    unrated = int((~rated).sum())
    table = table[rated & np.array([(int(u), int(i)) not in exclude
                                    for u, i in zip(table["user"], table["item"])], dtype=bool)]
    table = _drop_audited(run_dir, table).drop_duplicates(["user", "item"])
    if table.empty:
        raise UserError(f"{run_dir}: no training pairs left to label")
    rng = np.random.default_rng(seed)
    rows = table.iloc[rng.choice(len(table), size=min(n, len(table)), replace=False)]
    max_liked = RateSettings().max_liked
    try:
        max_liked = int(read_rating_manifest(run_dir)["settings"]["max_liked"])
    except (UserError, KeyError):
        pass  # not rated yet: the rating stage's default
    frame = audit_sheet(rows, profiles, max_liked)
    return frame, {"excluded_candidates": len(exclude), "available": int(len(table)),
                   "unrated_excluded": unrated}
