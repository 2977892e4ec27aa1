"""Importing audited labels: every row is checked first; a file with any bad row is refused.

A label file is CSV (``.csv``) or JSON Lines (``.jsonl`` / ``.ndjson``), as ``audit export``
writes it. Columns:

* required: ``user``, ``item`` (the run's user and item indices, as exported), ``label``;
* optional: ``annotator`` (who), ``labelled_at`` (when), ``note``; kept as given;
* anything else (profiles, model labels, ...) is ignored.

A row is bad when its user or item is not an integer index of the run's profiles, its label is
not High, Medium or Low (case and surrounding spaces do not matter; a blank label is bad:
delete the rows you did not label), or its pair appears more than once in the file (every
occurrence is listed). A missing required column makes the whole file bad. Nothing is stored
unless the whole file is valid; then it is stored in one transaction.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhni_local.audit.records import AuditStore
from llmhni_local.core.errors import DataError
from llmhni_local.core.io import sha256_file
from llmhni_local.engine.api import LABELS
from llmhni_local.text.profiles import load_profiles

REQUIRED = ("user", "item", "label")
OPTIONAL = ("annotator", "labelled_at", "note")
_LABEL_OF = {lab.lower(): lab for lab in LABELS}


class ImportRefused(DataError):
    """The file has bad rows; ``problems`` lists each (``str(exc)`` is the one-line summary)."""

    def __init__(self, summary: str, problems: list[str]) -> None:
        super().__init__(summary)
        self.problems = problems


@dataclass(frozen=True)
class ImportResult:
    file: str
    sha256: str
    rows: int
    replaced: int
    simulated: bool
    labels: dict[str, int]


def file_format(path: str | Path) -> str:
    """``csv`` or ``jsonl`` from the file name."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise DataError(f"{path}: unknown label file type {suffix!r} (use .csv or .jsonl)")


def read_rows(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """``(columns, [(line number, row)])`` of a label file, values as strings ('' if blank).

    Line numbers are those of the file (a CSV header is line 1, the first row line 2; a quoted
    value spanning lines counts from the line it starts on).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    if file_format(path) == "csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            rows = []
            line = reader.line_num
            for rec in reader:
                # A short row gives None for its missing fields (reported as missing values).
                rows.append((line + 1, {k: (None if v is None else str(v))
                                        for k, v in rec.items() if k is not None}))
                line = reader.line_num
        return columns, rows
    columns: list[str] = []
    rows = []
    problems = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except ValueError as exc:
            problems.append(f"line {n}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            problems.append(f"line {n}: not a JSON object")
            continue
        for k in rec:
            if k not in columns:
                columns.append(k)
        rows.append((n, {k: "" if v is None else str(v) for k, v in rec.items()}))  # null: blank
    if problems:
        raise ImportRefused(f"{path}: {len(problems)} bad lines; nothing was imported", problems)
    # A JSON Lines file has no header: a column is missing when no row has it.
    return columns, rows


def validate_rows(columns: list[str], rows: list[tuple[int, dict[str, Any]]], n_users: int,
                  n_items: int, *, where: str = "file") -> list[dict[str, Any]]:
    """Check every row; return the clean rows, or raise :class:`ImportRefused` listing every
    bad one (and store nothing)."""
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ImportRefused(
            f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            "nothing was imported",
            [f"column {c!r} is missing (required: {', '.join(REQUIRED)})" for c in missing])
    problems: list[str] = []
    clean: list[dict[str, Any]] = []
    seen: dict[tuple[int, int], list[int]] = {}
    for line, rec in rows:
        bad = [f"no {c} value" for c in REQUIRED if rec.get(c) is None]
        user = _index(rec.get("user"), n_users)
        item = _index(rec.get("item"), n_items)
        if user is None and rec.get("user") is not None:
            bad.append(f"unknown user {rec['user']!r} (users are 0..{n_users - 1})")
        if item is None and rec.get("item") is not None:
            bad.append(f"unknown item {rec['item']!r} (items are 0..{n_items - 1})")
        raw = str(rec.get("label") or "").strip()
        label = _LABEL_OF.get(raw.lower())
        if label is None and rec.get("label") is not None:
            bad.append(f"label {raw!r} is not one of {', '.join(LABELS)}" if raw else
                       "blank label (delete the rows you did not label)")
        if bad:
            problems.append(f"line {line}: " + "; ".join(bad))
            continue
        seen.setdefault((user, item), []).append(line)
        clean.append({"user": user, "item": item, "label": label, "line": line,
                      **{c: str(rec.get(c) or "").strip() for c in OPTIONAL}})
    for (u, i), lines in seen.items():
        if len(lines) > 1:
            problems += [f"line {n}: duplicate pair (user {u}, item {i}), also on line"
                         f"{'s' if len(lines) > 2 else ''} "
                         f"{', '.join(str(m) for m in lines if m != n)}" for n in lines]
    if problems:
        problems.sort(key=lambda p: int(p.split(":")[0].split()[1]))
        raise ImportRefused(f"{where}: {len(problems)} bad row{'s' if len(problems) > 1 else ''} "
                            f"(of {len(rows)}); nothing was imported", problems)
    if not clean:
        raise ImportRefused(f"{where}: no rows; nothing was imported", ["the file has no rows"])
    return clean


def _index(value: Any, n: int) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    try:
        k = int(text)
    except ValueError:
        try:
            f = float(text)  # "3.0" from a spreadsheet
        except ValueError:
            return None
        if not f.is_integer():
            return None
        k = int(f)
    return k if 0 <= k < n else None


def import_labels(run_dir: str | Path, path: str | Path) -> ImportResult:
    """Validate the label file at ``path`` against ``RUN``'s profiles and store it whole.

    Raises :class:`ImportRefused` (nothing stored) when any row is bad.
    """
    profiles = load_profiles(run_dir)
    columns, rows = read_rows(path)
    clean = validate_rows(columns, rows, len(profiles.users), len(profiles.items),
                          where=str(path))
    digest = sha256_file(path)
    with AuditStore(run_dir) as store:
        replaced = store.add_labels(clean, source_file=str(Path(path).resolve()),
                                    source_sha256=digest)
    simulated = all(str(r.get("annotator", "")).lower().startswith("simulated") for r in clean)
    counts = Counter(r["label"] for r in clean)
    return ImportResult(file=str(path), sha256=digest, rows=len(clean), replaced=replaced,
                        simulated=simulated, labels={lab: counts.get(lab, 0) for lab in LABELS})
