"""Verdicts made elsewhere, brought in as a file (docs/IMPORTING.md).

A rater run on another machine gives a file of ``user``, ``item``, ``verdict`` rows in the
data's raw ids (``Interactions.user_ids`` / ``item_ids``, read as text, so ``007`` and ``7``
are two ids). Every row is checked before anything is written; the first bad row is refused
in one line naming the file, the row, the column and the value, and the run folder is left
as it was.

Each imported pair's kind comes from the data (observed: a training pair; else unobserved)
and its action from :data:`~llmhni_local.verdicts.decide.ACTIONS`, with two guards the file
cannot switch off by accident:

* a ``hard`` pair that is a validation or test pair would put a held-out answer into training:
  it is counted and, unless ``keep_held_out``, not added (action ``none``, reason
  ``held_out``);
* a user every training edge of whom the file removes keeps them (action ``keep``, reason
  ``last_edges_of_user``), and is counted.

The table written (``RUN/verdicts.parquet``) has the columns the graph stage and the report
read (``user``, ``item`` as indices, ``kind``, ``verdict``, ``action``, ``p_hard``,
``simulated``) plus the raw ids, the file's row and the guards' columns; a row whose action is
not its verdict's changes nothing in G' (``stages/methods.py: verdict_table``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, sha256_file, write_json
from llmhni_local.data.dataset import Interactions
from llmhni_local.verdicts.decide import ACTIONS, COUNTS_FILE, VERDICTS_FILE, verdict_counts

#: File suffixes read, and the name of their format.
FORMATS = {".csv": "CSV", ".tsv": "TSV", ".parquet": "Parquet", ".jsonl": "JSON Lines",
           ".ndjson": "JSON Lines"}
#: Columns a verdicts file must have (others are ignored).
COLUMNS: tuple[str, ...] = ("user", "item", "verdict")
#: Verdicts a file may give (compared without case and surrounding spaces).
FILE_VERDICTS: tuple[str, ...] = ("hard", "noisy")
#: Why a row's action is not its verdict's (column ``reason``; ``""``: it is).
HELD_OUT, LAST_EDGES = "held_out", "last_edges_of_user"


def read_rows(path: str | Path) -> dict[str, list[str]]:
    """Every column of a verdicts file as text, one entry per data row (``""`` for a missing
    or null value); values are stripped of surrounding spaces.

    Numbers in Parquet and JSON Lines become their decimal text (``7`` -> ``"7"``); CSV and
    TSV are read as text throughout, so ``007`` stays ``"007"``. Blank lines are not rows.
    """
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in FORMATS:
        raise UserError(f"{path}: unknown file type {path.suffix!r} (use "
                        f"{', '.join(FORMATS)})")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if kind in (".csv", ".tsv"):
        rows = _read_csv(path, "\t" if kind == ".tsv" else ",")
    elif kind == ".parquet":
        rows = _read_parquet(path)
    else:
        rows = _read_jsonl(path)
    if not rows or not any(len(v) for v in rows.values()):
        raise UserError(f"{path}: no data rows")
    return rows


def _text(value: Any) -> str:
    """A cell as text: ``""`` for null, ints as decimals, floats as Python writes them."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip()


def _read_csv(path: Path, sep: str) -> dict[str, list[str]]:
    """A CSV or TSV file with a header line, every field as text; a record with more or fewer
    fields than the header is refused (a reader that shifted its fields would misname them)."""
    what = FORMATS[path.suffix.lower()]
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            records = [r for r in csv.reader(f, delimiter=sep)
                       if r and not (len(r) == 1 and not r[0].strip())]  # blank lines
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot be read as {what} ({exc})") from None
    if not records:
        raise UserError(f"{path}: empty file")
    header = [c.strip() for c in records[0]]
    twice = next((c for c in header if header.count(c) > 1), None)
    if twice is not None:
        raise UserError(f"{path} header: column {twice!r} appears twice")
    for n, r in enumerate(records[1:], start=1):
        if len(r) != len(header):
            raise UserError(f"{path} row {n}: {len(r)} fields where the header has "
                            f"{len(header)} ({sep.join(r)!r})")
    return {c: [_text(r[k]) for r in records[1:]] for k, c in enumerate(header)}


def _read_parquet(path: Path) -> dict[str, list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot be read as Parquet ({first})") from None
    return {name: [_text(v) for v in table.column(name).to_pylist()]
            for name in table.column_names}


def _read_jsonl(path: Path) -> dict[str, list[str]]:
    records: list[dict] = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line for line in f if line.strip()]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot be read as JSON Lines ({exc.reason})") from None
    for n, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} row {n}: not valid JSON ({exc.msg} at column "
                            f"{exc.colno})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path} row {n}: not a JSON object")
        records.append(obj)
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    return {c: [_text(r.get(c)) for r in records] for c in names}


def check_rows(path: str | Path, rows: dict[str, list[str]], user_ids: list[str],
               item_ids: list[str], *, skip_unknown: bool = False) -> dict[str, Any]:
    """Check every row of a verdicts file against the data's raw ids.

    Args:
        path: the file (named in messages).
        rows: its columns as text (:func:`read_rows`).
        user_ids: raw id of each user index (``Interactions.user_ids``); likewise ``item_ids``.
        skip_unknown: drop rows whose user or item id is not in the data (counted by reason:
            a row whose user is unknown counts as ``unknown_user``, else ``unknown_item``)
            instead of refusing them.

    Returns:
        ``{"user", "item": index arrays, "verdict": array of "hard"/"noisy", "row": the file
        row (1-based data row, the header not counted) of each pair's first row,
        "dropped": {"unknown_user", "unknown_item"}, "duplicates": identical rows collapsed,
        "rows": data rows read}``.

    Raises:
        UserError: one line for the first bad row: a missing column, an empty value, an
            unknown verdict, user or item id (without ``skip_unknown``), or a pair given
            two verdicts; the number of other bad rows follows it.
    """
    found = list(rows)
    for col in COLUMNS:
        if col not in rows:
            raise UserError(f"{path}: missing column {col!r} (found: "
                            f"{', '.join(found) or 'none'})")
    users = {u: k for k, u in enumerate(user_ids)}
    items = {i: k for k, i in enumerate(item_ids)}
    n = len(rows["user"])
    problems: list[str] = []
    dropped = {"unknown_user": 0, "unknown_item": 0}
    first: dict[tuple[int, int], tuple[int, str]] = {}  # pair -> (row, verdict)
    out_u, out_i, out_v, out_r = [], [], [], []
    duplicates = 0
    for r in range(n):
        row = r + 1
        u, i, v = rows["user"][r], rows["item"][r], rows["verdict"][r]
        problem, unknown = _row_problem(f"{path} row {row}", u, i, v, users, items)
        if unknown is not None and skip_unknown:
            dropped[unknown] += 1
            continue
        if problem is not None:
            problems.append(problem)
            continue
        pair, verdict = (users[u], items[i]), v.lower()
        if pair in first:
            prev_row, prev = first[pair]
            if prev != verdict:
                problems.append(f"{path} row {row}, column verdict: {v!r} conflicts with "
                                f"row {prev_row}'s {prev!r} for user {u!r}, item {i!r}")
            else:
                duplicates += 1
            continue
        first[pair] = (row, verdict)
        out_u.append(pair[0])
        out_i.append(pair[1])
        out_v.append(verdict)
        out_r.append(row)
    if problems:
        more = f" ({len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    if not out_u:
        raise UserError(f"{path}: every one of its {n} rows was dropped as unknown "
                        f"({dropped['unknown_user']} unknown user, {dropped['unknown_item']} "
                        "unknown item); nothing to import")
    return {"user": np.array(out_u, dtype=np.int64), "item": np.array(out_i, dtype=np.int64),
            "verdict": np.array(out_v, dtype=object), "row": np.array(out_r, dtype=np.int64),
            "dropped": dropped, "duplicates": duplicates, "rows": n}


def _row_problem(where: str, u: str, i: str, v: str, users: dict[str, int],
                 items: dict[str, int]) -> tuple[str | None, str | None]:
    """``(message, unknown)`` of one row: the message of its first problem (empty value,
    verdict, user, item; ``None``: none) and, for an unknown id, ``unknown_user`` or
    ``unknown_item`` (what ``skip_unknown`` drops it as)."""
    empty = next((c for c, x in zip(COLUMNS, (u, i, v)) if x == ""), None)
    if empty is not None:
        return f"{where}, column {empty}: empty value ''", None
    if v.lower() not in FILE_VERDICTS:
        return f"{where}, column verdict: unknown verdict {v!r} (hard or noisy, any case)", None
    for col, raw, ids in (("user", u, users), ("item", i, items)):
        if raw not in ids:
            return (f"{where}, column {col}: unknown {col} id {raw!r} (not among the data's "
                    f"{len(ids)} {col} ids)", f"unknown_{col}")
    return None, None


def _keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0] * n_items + pairs[:, 1]


def imported_table(checked: dict[str, Any], data: Interactions, *,
                   keep_held_out: bool = False):
    """The verdict table of checked rows (:func:`check_rows`) on ``data``, with the two
    guards applied (module docstring); returns ``(table, guards)``, ``guards`` the counts:
    ``held_out`` (hard unobserved pairs in validation and in test, and whether they stay
    adds) and ``users_kept`` (users left with no training edge by the removals, and the
    removals kept for them)."""
    import pandas as pd

    users, items = checked["user"], checked["item"]
    keys = users * data.n_items + items
    observed = np.isin(keys, _keys(data.train, data.n_items))
    kind = np.where(observed, "observed", "unobserved")
    verdict = checked["verdict"].astype(str)
    action = np.array([ACTIONS[(k, v)] for k, v in zip(kind, verdict)], dtype=object)
    reason = np.full(len(keys), "", dtype=object)

    # hard pairs that are held-out answers: validation first where a pair is in both
    in_val = np.isin(keys, _keys(data.val, data.n_items))
    in_test = np.isin(keys, _keys(data.test, data.n_items)) & ~in_val
    held_out = np.where(in_val, "validation", np.where(in_test, "test", "")).astype(object)
    leak = (action == "add") & (held_out != "")
    if not keep_held_out:
        action[leak] = "none"
        reason[leak] = HELD_OUT

    # users the removals would leave with no training edge keep theirs
    edges = np.unique(_keys(data.train, data.n_items))
    degree = np.bincount(edges // data.n_items, minlength=data.n_users)
    removing = action == "remove"
    removed_per_user = np.bincount(users[removing], minlength=data.n_users)
    emptied = np.flatnonzero((degree > 0) & (removed_per_user >= degree))
    spare = removing & np.isin(users, emptied)
    action[spare] = "keep"
    reason[spare] = LAST_EDGES

    table = pd.DataFrame({
        "user": users, "item": items, "kind": kind, "verdict": verdict,
        "action": action.astype(str), "reason": reason.astype(str),
        "held_out": held_out.astype(str), "p_hard": np.full(len(keys), np.nan),
        "simulated": np.zeros(len(keys), dtype=bool),
        "user_id": [data.user_ids[u] for u in users],
        "item_id": [data.item_ids[i] for i in items], "row": checked["row"]})
    guards = {"held_out": {"validation": int((leak & in_val).sum()),
                           "test": int((leak & in_test).sum()),
                           "kept_as_adds": bool(keep_held_out)},
              "users_kept": {"users": int(len(emptied)), "edges": int(spare.sum())}}
    return table, guards


def import_verdicts(run_dir: str | Path, path: str | Path, *, source: str,
                    data: Interactions, skip_unknown: bool = False,
                    keep_held_out: bool = False) -> dict[str, Any]:
    """Read, check and write a verdicts file as ``RUN/verdicts.parquet`` and
    ``RUN/verdicts.json``; returns what is written to the latter.

    Nothing is written unless every row passes (:func:`check_rows`). The counts are those of
    :func:`~llmhni_local.verdicts.decide.verdict_counts` (per kind and verdict, and per
    action) with ``imported: true``, ``source``, ``file`` (its resolved path), ``sha256``,
    ``format``, ``rows`` (data rows read), ``duplicates_collapsed``, ``dropped_unknown``,
    ``held_out`` and ``users_kept`` (:func:`imported_table`).
    """
    if not str(source).strip():
        raise UserError("verdicts import: the source name is empty (say where the verdicts "
                        "were made, e.g. --source lab-llama70b)")
    path = Path(path)
    if not data.user_ids or not data.item_ids:
        raise UserError(f"{data.name}: the data has no raw ids to match the file's against")
    rows = read_rows(path)
    checked = check_rows(path, rows, data.user_ids, data.item_ids, skip_unknown=skip_unknown)
    table, guards = imported_table(checked, data, keep_held_out=keep_held_out)
    counts: dict[str, Any] = {"imported": True, "source": str(source).strip(),
                              "file": str(path.resolve()), "sha256": sha256_file(path),
                              "format": FORMATS[path.suffix.lower()], "rows": checked["rows"],
                              "pairs": int(len(table)),
                              "duplicates_collapsed": checked["duplicates"],
                              "skip_unknown": bool(skip_unknown),
                              "dropped_unknown": checked["dropped"], **guards}
    counts.update(verdict_counts(table))
    counts["actions"]["none"] = int((table["action"] == "none").sum())  # held-out adds held back
    counts.pop("labels", None)  # no view labels: a file gives verdicts only
    run_dir = Path(run_dir)
    with atomic_path(run_dir / VERDICTS_FILE) as tmp:
        table.to_parquet(tmp, index=False, engine="pyarrow")
    write_json(run_dir / COUNTS_FILE, counts)
    return counts


def imported_record(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN/verdicts.json`` when its verdicts were imported from a file, else ``None``."""
    path = Path(run_dir) / COUNTS_FILE
    if not path.is_file():
        return None
    try:
        counts = json.loads(path.read_text())
    except ValueError:
        return None
    return counts if isinstance(counts, dict) and counts.get("imported") is True else None
