"""Judgments made elsewhere, brought in as a file (docs/IMPORTING.md, "Judgments from
elsewhere").

A big rater run on another machine gives, per (user, item) pair and view, a label (High,
Medium, Low) and/or a score (what the likelihood reader stores: ``judgments/likelihood.py``),
in the data's raw ids. The file is read and checked whole with the verdicts import's reader
(:mod:`llmhni_local.judgments.table_file`); nothing is written unless every row passes, so a
refused file leaves the judgment store byte for byte as it was.

The rows go into the judgment store under their **source**'s own key,
``Key("import:NAME", "", "imported")`` (:func:`~llmhni_local.judgments.store.imported_key`),
which no model's key can equal; importing under the same name again replaces that source's
rows. ``RUN/ratings/NAME.json`` is the source's rating manifest (its key, mode, file, sha256
and counts), so the verdict rules can be run on that one source
(``verdicts decide RUN --source NAME``); the last rating run (``RUN/rating.json``) stays the
default. In the pipeline (``rate.file``) the import *is* the run's rating, and its manifest is
written as ``rating.json`` too.

Each row's candidate kind comes from the data (observed: a training pair; else unobserved),
as the rating stage stores it. An imported judgment has no label probabilities.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import sha256_file, write_json
from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.api import LABELS
from llmhni_local.judgments.plan import RATING_MANIFEST, last_rating
from llmhni_local.judgments.store import (
    IMPORT_PREFIX,
    VIEWS,
    JudgmentStore,
    Key,
    imported_key,
    source_problem,
)
from llmhni_local.judgments.table_file import (
    FORMATS,
    check_table,
    missing_column,
    read_rows,
)
from llmhni_local.llmhni.candidates import CANDIDATE_DTYPE, CANDIDATES_FILE, load_candidates

#: Columns every judgments file has; ``label`` and/or ``score`` come beside them, and
#: optionally ``ok`` (0: a failed judgment) and ``text`` (the raw answer, kept as is).
COLUMNS: tuple[str, ...] = ("user", "item", "view")
#: Where each source's rating manifest is kept, relative to the run folder.
SOURCES_DIR = "ratings"
_LABEL_OF = {lab.lower(): lab for lab in LABELS}
_OK_OF = {"1": 1, "0": 0, "true": 1, "false": 0}


def source_manifest_path(run_dir: str | Path, source: str) -> Path:
    """``RUN/ratings/NAME.json``: the rating manifest of imported source ``NAME``."""
    problem = source_problem(source)
    if problem is not None:
        raise UserError(problem)
    return Path(run_dir) / SOURCES_DIR / f"{source}.json"


def imported_sources(run_dir: str | Path) -> list[str]:
    """The names of the sources imported into ``RUN``."""
    folder = Path(run_dir) / SOURCES_DIR
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def check_judgment_rows(path: str | Path, rows: dict[str, list[str]], user_ids: list[str],
                        item_ids: list[str], *, skip_unknown: bool = False) -> dict[str, Any]:
    """Check every row of a judgments file against the data's raw ids.

    A row is bad (one line naming the file, the row, the column and the value; the number of
    other bad rows follows the first) when: a column of :data:`COLUMNS` is missing, or both
    ``label`` and ``score``; a value of ``user``, ``item`` or ``view`` is empty; the view is
    not ``user`` or ``item``; ``ok`` is not 1, 0, true or false; an answered row (``ok`` not
    0) has neither a label nor a score, a label other than High / Medium / Low, a score that
    is not a finite number, or lacks the label (score) other rows give (a rule reads one or
    the other for every pair); its user or item id is unknown (dropped and counted with
    ``skip_unknown``); or a (user, item, view) given twice differs. Identical repeats are
    collapsed and counted. A row with ``ok`` 0 is a failed judgment: its label and score are
    not read.

    Returns:
        ``{"user", "item": index arrays, "view", "label" (None: none), "text": object arrays,
        "score": floats (NaN: none), "ok": 0/1, "row": each judgment's first file row,
        "labels", "scores": whether the file gives them, "dropped", "duplicates", "rows"}``.
    """
    for col in COLUMNS:
        if col not in rows:
            raise missing_column(path, rows, repr(col))
    if "label" not in rows and "score" not in rows:
        raise missing_column(path, rows, "'label' or 'score'")
    read_row, has_labels, has_scores = _row_reader(rows)
    t = check_table(path, rows, user_ids, item_ids, required=COLUMNS, read_row=read_row,
                    skip_unknown=skip_unknown)
    text = rows.get("text")
    labels = [v.get("label") for v in t.values]
    return {"user": np.array(t.user, dtype=np.int64), "item": np.array(t.item, dtype=np.int64),
            "view": np.array([dict(k)["view"] for k in t.key], dtype=object),
            "label": np.array(labels, dtype=object),
            "score": np.array([np.nan if v.get("score") is None else v["score"]
                               for v in t.values], dtype=np.float64),
            "ok": np.array([v["ok"] for v in t.values], dtype=np.int64),
            "text": np.array([(text[r - 1] if text is not None else "") or (lab or "")
                              for r, lab in zip(t.row, labels)], dtype=object),
            "row": np.array(t.row, dtype=np.int64), "labels": has_labels,
            "scores": has_scores, "dropped": t.dropped,
            "duplicates": t.duplicates, "rows": t.rows}


def _row_reader(rows: dict[str, list[str]]):
    """``(read_row, labels, scores)`` of a judgments file: its
    :data:`~llmhni_local.judgments.table_file.RowReader` (the view, ``ok``, the label and the
    score), and whether the file gives labels and scores (then every answered row must)."""
    n = len(rows["user"])
    label = rows.get("label", [""] * n)
    score = rows.get("score", [""] * n)
    oks = rows.get("ok")
    answered = [oks is None or _OK_OF.get(oks[r].lower(), 1) != 0 for r in range(n)]
    first_label = next((r for r in range(n) if answered[r] and label[r]), None)
    first_score = next((r for r in range(n) if answered[r] and score[r]), None)

    def read_row(where: str, r: int):
        raw_view = rows["view"][r]
        view = raw_view.lower()
        if view not in VIEWS:
            return (f"{where}, column view: unknown view {raw_view!r} (user or item, any case)",
                    (), {})
        extra = (("view", view),)
        ok_text = oks[r] if oks is not None else ""
        ok = _OK_OF.get(ok_text.lower(), None) if ok_text else 1
        if ok is None:
            return f"{where}, column ok: {ok_text!r} is not 1, 0, true or false", extra, {}
        if ok == 0:  # a failed judgment: no label, no score
            return None, extra, {"ok": (0, ok_text)}
        lab, sc = label[r], score[r]
        if not lab and not sc:
            return (f"{where}, columns label and score: neither has a value (a judgment needs "
                    "a label, a score or both; a failed one has ok 0)", extra, {})
        parsed_label = None
        if lab:
            parsed_label = _LABEL_OF.get(lab.lower())
            if parsed_label is None:
                return (f"{where}, column label: unknown label {lab!r} (High, Medium or Low, "
                        "any case)", extra, {})
        elif first_label is not None:
            return (f"{where}, column label: empty value '' (row {first_label + 1} gives a "
                    "label: give one in every answered row, or in none)", extra, {})
        parsed_score = None
        if sc:
            try:
                parsed_score = float(sc)
            except ValueError:
                return f"{where}, column score: {sc!r} is not a number", extra, {}
            if not math.isfinite(parsed_score):
                return f"{where}, column score: {sc!r} is not a finite number", extra, {}
        elif first_score is not None:
            return (f"{where}, column score: empty value '' (row {first_score + 1} gives a "
                    "score: give one in every answered row, or in none)", extra, {})
        return None, extra, {"ok": (1, ok_text), "label": (parsed_label, lab),
                             "score": (parsed_score, sc)}

    return read_row, first_label is not None, first_score is not None


def view_counts(users: np.ndarray, items: np.ndarray, views: np.ndarray,
                n_items: int) -> dict[str, int]:
    """Pairs judged in both views, and in the user (item) view only: a pair with one view
    gets no verdict (``unrated``)."""
    keys = np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64)
    in_user = set(keys[np.asarray(views) == "user"].tolist())
    in_item = set(keys[np.asarray(views) == "item"].tolist())
    return {"pairs": len(in_user | in_item), "both_views": len(in_user & in_item),
            "user_view_only": len(in_user - in_item), "item_view_only": len(in_item - in_user)}


def import_judgments(run_dir: str | Path, path: str | Path, *, source: str,
                     data: Interactions, skip_unknown: bool = False,
                     as_last_rating: bool = False) -> dict[str, Any]:
    """Read, check and store a judgments file under ``source``; returns its rating manifest.

    Nothing is written unless every row passes (:func:`check_judgment_rows`). Then, in one
    transaction, the source's rows are replaced by the file's, and ``RUN/ratings/NAME.json``
    is written (and ``RUN/rating.json`` with ``as_last_rating``, the pipeline's rate stage).
    The manifest holds the key (``model_id``, ``adapter``, each view's ``prompt_hash``, as a
    rating run's does), ``mode`` (``likelihood`` for a file of scores alone, else ``judge``),
    ``imported: true``, ``source``, ``file``, ``sha256``, ``format``, ``rows``, ``judgments``
    stored, ``failures`` (ok 0), ``labels`` and ``scores`` (whether the file gives them),
    ``duplicates_collapsed``, ``skip_unknown``, ``dropped_unknown``, the pairs per view
    (:func:`view_counts`) and the pairs per candidate kind.
    """
    problem = source_problem(source)
    if problem is not None:
        raise UserError(f"judgments import: {problem}")
    path = Path(path)
    if not data.user_ids or not data.item_ids:
        raise UserError(f"{data.name}: the data has no raw ids to match the file's against")
    checked = check_judgment_rows(path, read_rows(path), data.user_ids, data.item_ids,
                                  skip_unknown=skip_unknown)
    users, items = checked["user"], checked["item"]
    train = np.asarray(data.train, np.int64).reshape(-1, 2)
    observed = np.isin(users * data.n_items + items, train[:, 0] * data.n_items + train[:, 1])
    kind = np.where(observed, "observed", "unobserved")
    key = imported_key(source)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = [(int(u), int(i), str(v), key.model_id, key.adapter, key.prompt_hash, str(k), str(t),
             lab, None, None, None, None, int(ok), now, None if math.isnan(s) else float(s))
            for u, i, v, k, t, lab, ok, s in zip(users, items, checked["view"], kind,
                                                 checked["text"], checked["label"],
                                                 checked["ok"], checked["score"])]
    rows.sort(key=lambda r: r[:3])  # in the primary key's order: SQLite appends, not seeks
    pairs = view_counts(users, items, checked["view"], data.n_items)
    first = np.unique(users * data.n_items + items, return_index=True)[1]
    manifest: dict[str, Any] = {
        "model_id": key.model_id, "adapter": key.adapter,
        "views": {v: {"prompt_hash": key.prompt_hash} for v in VIEWS},
        "mode": "likelihood" if checked["scores"] and not checked["labels"] else "judge",
        "imported": True, "source": source, "file": str(path.resolve()),
        "sha256": sha256_file(path), "format": FORMATS[path.suffix.lower()],
        "rows": checked["rows"], "judgments": len(rows),
        "failures": int((checked["ok"] == 0).sum()), "labels": checked["labels"],
        "scores": checked["scores"], "duplicates_collapsed": checked["duplicates"],
        "skip_unknown": bool(skip_unknown), "dropped_unknown": checked["dropped"], **pairs,
        "kinds": {k: int((kind[first] == k).sum()) for k in ("observed", "unobserved")},
        "imported_at": now, "status": "done"}
    run_dir = Path(run_dir)
    with JudgmentStore(run_dir) as store:
        manifest["replaced"] = store.replace_rows(key, rows)
    write_json(source_manifest_path(run_dir, source), manifest)
    if as_last_rating:
        write_json(run_dir / RATING_MANIFEST, manifest)
    return manifest


def read_source(run_dir: str | Path, source: str) -> dict[str, Any]:
    """The rating manifest of imported source ``source`` of ``RUN``."""
    path = source_manifest_path(run_dir, source)
    if not path.is_file():
        have = ", ".join(imported_sources(run_dir)) or "none"
        raise UserError(f"{path}: no judgments imported under source {source!r} in this run "
                        f"folder (imported: {have}; `judgments import RUN FILE --source "
                        f"{source}` first)")
    return json.loads(path.read_text())


def source_rating(run_dir: str | Path, source: str | None = None) -> tuple[Any, dict[str, Any]]:
    """``(judgments, manifest)`` of imported source ``source`` of ``RUN`` (one row per pair
    and view, as :func:`~llmhni_local.judgments.plan.last_rating` gives them), or of the last
    rating run when ``source`` is ``None``."""
    if source is None:
        return last_rating(run_dir)
    manifest = read_source(run_dir, source)
    if not str(manifest.get("model_id", "")).startswith(IMPORT_PREFIX):
        raise UserError(f"{source_manifest_path(run_dir, source)}: not the manifest of an "
                        "imported source")
    keys = {v: Key(manifest["model_id"], manifest["adapter"], manifest["views"][v]["prompt_hash"])
            for v in VIEWS}
    with JudgmentStore(run_dir, create=False) as store:
        return store.frame(views=keys), manifest


def source_candidates(run_dir: str | Path, judgments) -> tuple[np.ndarray, dict[str, int]]:
    """The pairs an imported source judged, as candidates: each with the kind stored with its
    judgments and, where it is a candidate of the run too (``candidates.parquet``), that
    candidate's rank and recommender score (else rank -1, score NaN). Returns them and how
    many are, and are not, candidates of the run."""
    pairs = (judgments[["user", "item", "kind"]].drop_duplicates(["user", "item"])
             .sort_values(["user", "item"], kind="stable"))
    out = np.zeros(len(pairs), dtype=CANDIDATE_DTYPE)
    out["user"], out["item"] = pairs["user"].to_numpy(np.int64), pairs["item"].to_numpy(np.int64)
    out["kind"] = pairs["kind"].fillna("unobserved").astype(str).to_numpy()
    out["rank"], out["score"] = -1, np.nan
    found = 0
    path = Path(run_dir) / CANDIDATES_FILE
    if path.is_file() and len(out):
        cands = load_candidates(path)
        where = {(int(u), int(i)): k for k, (u, i) in enumerate(zip(cands["user"], cands["item"]))}
        at = np.array([where.get((int(u), int(i)), -1) for u, i in zip(out["user"], out["item"])])
        hit = at >= 0
        out["rank"][hit], out["score"][hit] = cands["rank"][at[hit]], cands["score"][at[hit]]
        found = int(hit.sum())
    return out, {"candidates_of_run": found, "not_candidates_of_run": len(out) - found}
