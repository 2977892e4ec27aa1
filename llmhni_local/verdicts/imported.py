"""Verdicts made elsewhere, brought in as a file (docs/IMPORTING.md).

A rater run on another machine gives a file of ``user``, ``item``, ``verdict`` rows in the
data's raw ids (``Interactions.user_ids`` / ``item_ids``, read as text, so ``007`` and ``7``
are two ids). Every row is checked before anything is written; the first bad row is refused
in one line naming the file, the row, the column and the value, and the run folder is left
as it was. The reading and the checks every such file shares live in
``judgments/table_file.py`` (the judgments import reads its files the same way).

Each imported pair's kind comes from the data (observed: a training pair; else unobserved)
and its action from :data:`~llmhni_local.verdicts.decide.ACTIONS`, with two guards the file
cannot switch off by accident (:func:`~llmhni_local.verdicts.guards.guard_imported`, shared
with judgments imported from a file):

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

import json
from pathlib import Path
from typing import Any

import numpy as np

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, sha256_file, write_json
from llmhni_local.data.dataset import Interactions
from llmhni_local.judgments.table_file import FORMATS, check_table, read_rows
from llmhni_local.verdicts.decide import ACTIONS, COUNTS_FILE, VERDICTS_FILE, verdict_counts
from llmhni_local.verdicts.guards import guard_imported

#: Columns a verdicts file must have (others are ignored).
COLUMNS: tuple[str, ...] = ("user", "item", "verdict")
#: Verdicts a file may give (compared without case and surrounding spaces).
FILE_VERDICTS: tuple[str, ...] = ("hard", "noisy")


def check_rows(path: str | Path, rows: dict[str, list[str]], user_ids: list[str],
               item_ids: list[str], *, skip_unknown: bool = False) -> dict[str, Any]:
    """Check every row of a verdicts file against the data's raw ids
    (:func:`llmhni_local.judgments.table_file.check_table`, with the verdict's own check).

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
    verdicts = rows.get("verdict", [])

    def read_row(where: str, r: int):
        v = verdicts[r]
        if v.lower() not in FILE_VERDICTS:
            return (f"{where}, column verdict: unknown verdict {v!r} (hard or noisy, any "
                    "case)", (), {})
        return None, (), {"verdict": (v.lower(), v)}

    t = check_table(path, rows, user_ids, item_ids, required=COLUMNS, read_row=read_row,
                    skip_unknown=skip_unknown)
    return {"user": np.array(t.user, dtype=np.int64), "item": np.array(t.item, dtype=np.int64),
            "verdict": np.array([v["verdict"] for v in t.values], dtype=object),
            "row": np.array(t.row, dtype=np.int64), "dropped": t.dropped,
            "duplicates": t.duplicates, "rows": t.rows}


def imported_table(checked: dict[str, Any], data: Interactions, *,
                   keep_held_out: bool = False):
    """The verdict table of checked rows (:func:`check_rows`) on ``data``, with the two
    guards applied (:func:`~llmhni_local.verdicts.guards.guard_imported`); returns
    ``(table, guards)``."""
    import pandas as pd

    users, items = checked["user"], checked["item"]
    keys = users * data.n_items + items
    observed = np.isin(keys, data.train[:, 0].astype(np.int64) * data.n_items + data.train[:, 1])
    kind = np.where(observed, "observed", "unobserved")
    verdict = checked["verdict"].astype(str)
    table = pd.DataFrame({
        "user": users, "item": items, "kind": kind, "verdict": verdict,
        "action": [ACTIONS[(k, v)] for k, v in zip(kind, verdict)],
        "p_hard": np.full(len(keys), np.nan), "simulated": np.zeros(len(keys), dtype=bool),
        "user_id": [data.user_ids[u] for u in users],
        "item_id": [data.item_ids[i] for i in items], "row": checked["row"]})
    guards = guard_imported(table, train=data.train, val=data.val, test=data.test,
                            n_users=data.n_users, n_items=data.n_items,
                            keep_held_out=keep_held_out)
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
