"""A table made elsewhere, in the data's raw ids: read as text, and every row checked before
anything is written (docs/IMPORTING.md).

Verdicts (``verdicts/imported.py``) and judgments (``judgments/imported.py``) made on another
machine come back as such a table: CSV, TSV, Parquet or JSON Lines, one row per pair (and
view), naming users and items by their raw ids (``Interactions.user_ids`` / ``item_ids``,
read as text, so ``007`` and ``7`` are two ids). This module reads the file
(:func:`read_rows`) and checks what every such table shares (:func:`check_table`): its
columns, empty values, ids the data does not have (refused, or dropped and counted with
``skip_unknown``) and a pair given twice with different values. The first bad row is one line
naming the file, the row, the column and the value, followed by the number of other bad rows.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llmhni_local.core.errors import UserError

#: File suffixes read, and the name of their format.
FORMATS = {".csv": "CSV", ".tsv": "TSV", ".parquet": "Parquet", ".jsonl": "JSON Lines",
           ".ndjson": "JSON Lines"}


def read_rows(path: str | Path) -> dict[str, list[str]]:
    """Every column of a table file as text, one entry per data row (``""`` for a missing
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


def missing_column(path: str | Path, rows: dict[str, list[str]], column: str) -> UserError:
    """The one-line error of a column the file lacks (``column`` may name alternatives)."""
    return UserError(f"{path}: missing column {column} (found: {', '.join(rows) or 'none'})")


#: ``read_row(where, r) -> (problem, key, values)`` for data row index ``r`` (0-based;
#: ``where`` is ``"FILE row N"``): the one-line message of its first problem (``None``: none),
#: what besides the pair tells its rows apart (``(("view", "user"),)``; ``()`` for none), and
#: its values ``{column: (parsed, text as written)}``, compared between repeats.
RowReader = Callable[[str, int], tuple[str | None, tuple[tuple[str, str], ...],
                                       dict[str, tuple[Any, str]]]]


@dataclass
class CheckedTable:
    """What :func:`check_table` kept: one entry per distinct key, in the file's order."""

    rows: int  # data rows read
    user: list[int]  # user index of each kept key
    item: list[int]
    key: list[tuple[tuple[str, str], ...]]  # what besides the pair names it (read_row's key)
    values: list[dict[str, Any]]  # parsed values
    row: list[int]  # the file row (1-based) of its first occurrence
    dropped: dict[str, int]  # rows dropped by skip_unknown: unknown_user, unknown_item
    duplicates: int  # identical repeats collapsed


def check_table(path: str | Path, rows: dict[str, list[str]], user_ids: list[str],
                item_ids: list[str], *, required: tuple[str, ...], read_row: RowReader,
                skip_unknown: bool = False) -> CheckedTable:
    """Check every row of a table file against the data's raw ids.

    Each row is checked in this order and gets one message: an empty value in a
    ``required`` column (in their order), ``read_row``'s own checks, an unknown user id, an
    unknown item id. A key (the pair, and ``read_row``'s key) given twice with a different
    value is a bad row; given twice alike, its repeats are collapsed and counted.

    Args:
        path: the file (named in messages).
        rows: its columns as text (:func:`read_rows`).
        user_ids: raw id of each user index (``Interactions.user_ids``); likewise ``item_ids``.
        required: columns every row must fill; ``user`` and ``item`` among them.
        read_row: the table's own checks and values (:data:`RowReader`).
        skip_unknown: drop rows whose user or item id is not in the data (counted by reason:
            a row whose user is unknown counts as ``unknown_user``, else ``unknown_item``)
            instead of refusing them.

    Raises:
        UserError: one line for the first bad row (with the number of other bad rows), for a
            missing required column, or for a file every row of which was dropped.
    """
    for col in required:
        if col not in rows:
            raise missing_column(path, rows, repr(col))
    users = {u: k for k, u in enumerate(user_ids)}
    items = {i: k for k, i in enumerate(item_ids)}
    n = len(rows["user"])
    problems: list[str] = []
    out = CheckedTable(rows=n, user=[], item=[], key=[], values=[], row=[],
                       dropped={"unknown_user": 0, "unknown_item": 0}, duplicates=0)
    first: dict[tuple, int] = {}  # key -> index into out
    for r in range(n):
        where = f"{path} row {r + 1}"
        empty = next((c for c in required if rows[c][r] == ""), None)
        if empty is not None:
            problems.append(f"{where}, column {empty}: empty value ''")
            continue
        problem, extra, values = read_row(where, r)
        if problem is not None:
            problems.append(problem)
            continue
        u, i = rows["user"][r], rows["item"][r]
        unknown = next(((col, raw, ids) for col, raw, ids in (("user", u, users),
                                                              ("item", i, items))
                        if raw not in ids), None)
        if unknown is not None:
            col, raw, ids = unknown
            if skip_unknown:
                out.dropped[f"unknown_{col}"] += 1
            else:
                problems.append(f"{where}, column {col}: unknown {col} id {raw!r} (not among "
                                f"the data's {len(ids)} {col} ids)")
            continue
        key = (users[u], items[i], *(v for _, v in extra))
        if key in first:
            conflict = _conflict(where, out, first[key], values, f"user {u!r}, item {i!r}"
                                 + "".join(f", {name} {v!r}" for name, v in extra))
            if conflict is None:
                out.duplicates += 1
            else:
                problems.append(conflict)
            continue
        first[key] = len(out.row)
        out.user.append(key[0])
        out.item.append(key[1])
        out.key.append(extra)
        out.values.append({c: parsed for c, (parsed, _) in values.items()})
        out.row.append(r + 1)
    if problems:
        more = f" ({len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    if not out.row:
        raise UserError(f"{path}: every one of its {n} rows was dropped as unknown "
                        f"({out.dropped['unknown_user']} unknown user, "
                        f"{out.dropped['unknown_item']} unknown item); nothing to import")
    return out


def _conflict(where: str, out: CheckedTable, k: int, values: dict[str, tuple[Any, str]],
              named: str) -> str | None:
    """The message of a repeat whose values differ from those kept at ``out``'s entry ``k``
    (``None``: an identical repeat): the current row's value as written, the earlier row's
    as read (``'hard'``, ``'0.5'``)."""
    differ = next((c for c, (parsed, _) in values.items() if out.values[k].get(c) != parsed),
                  None)
    if differ is None:
        return None
    before = out.values[k].get(differ)
    return (f"{where}, column {differ}: {values[differ][1]!r} conflicts with row {out.row[k]}'s "
            f"{'' if before is None else str(before)!r} for {named}")
