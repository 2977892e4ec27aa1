"""Exporting rated pairs for a human audit: a stratified sample, profiles included.

The sample is drawn from the candidate pairs of ``RUN`` that the last rating run (``RUN/
rating.json``) rated, stratified by candidate kind (observed / unobserved) and verdict (hard /
noisy / failed: a view that was not a label). Unrated pairs are not offered, and pairs already
audited are left out (unless asked), so a second export gives new pairs.

Allocation of ``n`` over the strata:

* ``proportional`` (default): each stratum in proportion to its size (largest remainders), so
  the audit's accuracy estimates that of the whole candidate set;
* ``equal``: the same number per stratum (what a small stratum lacks goes to the others), so
  rare verdicts such as unobserved-hard get enough audits to say something about them; the
  accuracy over such a sample over-weights the small strata.

Each row carries what an annotator needs (the user's profile, the user's liked items as the
item-centric prompt lists them, the item's profile), the pair's raw ids (``user_id``,
``item_id``: the ids of the data's own files, when the profiles say which data they were built
from; ``user`` and ``item`` stay the indices ``audit import`` reads) and blank ``label``,
``annotator``, ``labelled_at`` and ``note`` columns. The model's labels are left out unless
``show_model_labels`` (pre-filled labels anchor annotators); for the same reason the rows are
shuffled rather than grouped by stratum, and the verdict is not shown either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from llmhni_local.audit.importer import file_format
from llmhni_local.audit.records import AUDIT_DB, AuditStore, audit_dir
from llmhni_local.core.config import DataSettings, build
from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path
from llmhni_local.data import load_data
from llmhni_local.judgments.imported import source_candidates
from llmhni_local.judgments.plan import RateSettings, last_rating, liked_text
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
from llmhni_local.text.profiles import data_fingerprint, load_profiles
from llmhni_local.verdicts.decide import compute_verdicts

FILL_COLUMNS = ("label", "annotator", "labelled_at", "note")
MODEL_COLUMNS = ("model_label_user", "model_label_item", "p_high_user", "p_high_item",
                 "verdict", "model_id")


def allocate(sizes: dict[str, int], n: int,
             how: Literal["proportional", "equal"] = "proportional") -> dict[str, int]:
    """How many pairs to draw from each stratum (never more than it holds).

    >>> allocate({"a": 90, "b": 10}, 10)
    {'a': 9, 'b': 1}
    >>> allocate({"a": 90, "b": 2}, 10, "equal")
    {'a': 8, 'b': 2}
    """
    total = sum(sizes.values())
    n = min(n, total)
    out = {k: 0 for k in sizes}
    if n <= 0:
        return out
    if how == "proportional":
        quota = {k: n * s / total for k, s in sizes.items()}
        out = {k: int(np.floor(q)) for k, q in quota.items()}
        rest = n - sum(out.values())
        # largest remainders first; ties by stratum name, so the result is deterministic
        for k in sorted(quota, key=lambda k: (-(quota[k] - out[k]), k))[:rest]:
            out[k] += 1
        return out
    if how != "equal":
        raise ValueError(f"allocation must be 'proportional' or 'equal', got {how!r}")
    left = n
    open_ = sorted(k for k, s in sizes.items() if s > 0)
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        for j, k in enumerate(open_):
            take = min(sizes[k] - out[k], share + (1 if j < extra else 0))
            out[k] += take
            left -= take
        open_ = [k for k in open_ if out[k] < sizes[k]]
    return out


def rated_pairs(run_dir: str | Path):
    """The candidates of ``RUN`` with the last rating run's labels and verdict per pair; when
    that rating was imported from a file (``rate.file``), the pairs the file judged
    (``judgments/imported.py: source_candidates``)."""
    run_dir = Path(run_dir)
    judgments, manifest = last_rating(run_dir)
    if manifest.get("imported") is True:
        candidates, _ = source_candidates(run_dir, judgments)
    else:
        candidates = load_candidates(run_dir / CANDIDATES_FILE)
    table = compute_verdicts(candidates, judgments)
    table["model_id"] = manifest["model_id"]
    return table, manifest


def export_sample(run_dir: str | Path, n: int, *, seed: int = 0, show_model_labels: bool = False,
                  allocation: Literal["proportional", "equal"] = "proportional",
                  include_audited: bool = False, kinds: tuple[str, ...] = ("observed",
                                                                           "unobserved")):
    """The audit sample as a DataFrame, and the strata sizes and allocation.

    Args:
        run_dir: run folder with profiles, candidates, judgments and ``rating.json``.
        n: pairs to draw (fewer when fewer are rated).
        seed: seed of the draw and of the row order.
        show_model_labels: add the model's labels, High probabilities and verdict.
        allocation: ``proportional`` or ``equal`` (see the module docstring).
        include_audited: offer pairs that already have an audited label.
        kinds: candidate kinds to draw from.
    """

    if n <= 0:
        raise UserError(f"audit export: --n must be > 0, got {n}")
    run_dir = Path(run_dir)
    profiles = load_profiles(run_dir)
    table, manifest = rated_pairs(run_dir)
    max_liked = int(manifest.get("settings", {}).get("max_liked", RateSettings().max_liked))
    table = table[table["verdict"].isin(["hard", "noisy", "failed"]) & table["kind"].isin(kinds)]
    if not include_audited:
        table = _drop_audited(run_dir, table)
    if table.empty:
        raise UserError(f"{run_dir}: no rated pairs left to export (rate first, or pass "
                        "--include-audited)")
    stratum = table["kind"] + "/" + table["verdict"]
    sizes = {str(k): int(v) for k, v in stratum.value_counts().sort_index().items()}
    counts = allocate(sizes, n, allocation)
    rng = np.random.default_rng(seed)
    picked = []
    for name, k in counts.items():
        idx = np.flatnonzero((stratum == name).to_numpy())
        picked.append(rng.choice(idx, size=k, replace=False))
    rows = table.iloc[np.concatenate(picked)]
    rows = rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)
    out = audit_sheet(rows, profiles, max_liked)
    ids = raw_ids(run_dir, profiles)
    if ids is not None:  # beside the indices, so a sheet can be matched with outside files
        out.insert(3, "user_id", [ids[0][u] for u in out["user"]])
        out.insert(4, "item_id", [ids[1][i] for i in out["item"]])
    if show_model_labels:
        out["model_label_user"] = rows["label_user"].fillna("(failed)").to_numpy()
        out["model_label_item"] = rows["label_item"].fillna("(failed)").to_numpy()
        out["p_high_user"] = rows["p_high_user"].to_numpy()
        out["p_high_item"] = rows["p_high_item"].to_numpy()
        out["verdict"] = rows["verdict"].to_numpy()
        out["model_id"] = rows["model_id"].to_numpy()
    info = {"strata": sizes, "drawn": counts, "allocation": allocation, "seed": seed,
            "model_id": manifest["model_id"], "adapter": manifest["adapter"],
            "show_model_labels": show_model_labels}
    return out, info


def raw_ids(run_dir: str | Path, profiles) -> tuple[list[str], list[str]] | None:
    """The data's raw user and item ids (``Interactions.user_ids``, ``item_ids``) of the data
    ``profiles`` were built from, or ``None`` when they do not record it (or the data has no
    raw ids)."""
    saved = profiles.info.get("data_settings")
    if not saved:
        return None
    data = load_data(build(DataSettings, saved, "data"))
    if data_fingerprint(data) != profiles.info.get("data"):
        raise UserError(f"{run_dir}: the data does not match the one the profiles were built "
                        "from; run `profiles` again")
    if not data.user_ids or not data.item_ids:
        return None
    return list(data.user_ids), list(data.item_ids)


def audit_sheet(rows, profiles, max_liked: int):
    """The sheet people fill: one row per ``(user, item)`` of ``rows`` (with its ``kind``, or
    ``observed`` when ``rows`` has none), numbered, with the texts the rater saw and the empty
    columns of :data:`FILL_COLUMNS`."""
    import pandas as pd

    users = rows["user"].astype(np.int64).to_numpy()
    items = rows["item"].astype(np.int64).to_numpy()
    out = pd.DataFrame({
        "sample": np.arange(1, len(rows) + 1), "user": users, "item": items,
        "kind": rows["kind"].to_numpy() if "kind" in rows else "observed",
        "user_profile": [profiles.users[int(u)] for u in users],
        "liked_items": [liked_text(profiles, int(u), int(i), max_liked)
                        for u, i in zip(users, items)],
        "item_profile": [profiles.items[int(i)] for i in items],
    })
    for c in FILL_COLUMNS:
        out[c] = ""
    return out


def _drop_audited(run_dir: Path, table):
    if not (audit_dir(run_dir) / AUDIT_DB).is_file():
        return table
    with AuditStore(run_dir) as store:
        done = store.labels()
    if done.empty:
        return table
    have = set(zip(done["user"].astype(int), done["item"].astype(int)))
    mask = [(int(u), int(i)) not in have for u, i in zip(table["user"], table["item"])]
    return table[np.asarray(mask, dtype=bool)]


def write_table(frame, path: str | Path) -> Path:
    """Write a sample (or label) table as CSV or JSON Lines by the file name, atomically."""
    path = Path(path)
    fmt = file_format(path)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
    return path
