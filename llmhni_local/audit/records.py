"""The audited labels of a run: ``RUN/audit/audit.sqlite``.

A separate SQLite file (not a table in ``judgments.sqlite``): audits are people's work, kept
apart from the model's answers, and the judgment store stays the rating stage's alone.

Tables:

* ``labels``: one row per audited pair ``(user, item)`` with its label (High / Medium / Low),
  who labelled it and when (as the file gave them, empty where it did not), the file it came
  from (path and sha256), when it was imported and whether it is simulated (derived from
  ratings, not a person). A later import of the same pair replaces the earlier label (the
  import says how many it replaced).
* ``imports``: one row per imported file (path, sha256, rows, replaced, time, simulated).
* ``finetune_pairs``: which audited pairs trained (``role = 'train'``) or validated
  (``'validation'``) which adapter. Training pairs are left out of every evaluation of a rater
  (``audit report``), whatever rater is evaluated.

Every write is one transaction, so a file is stored whole or not at all. Opening an existing
store runs ``PRAGMA quick_check``: a damaged file is one line naming it and what to do.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterable, Sequence

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import sha256_text
from llmhni_local.engine.api import LABELS
from llmhni_local.judgments.store import integrity_problem, is_damage
from llmhni_local.verdicts.decide import Audits

AUDIT_DIR = "audit"
AUDIT_DB = "audit.sqlite"
SIMULATED_PREFIX = "simulated"  # an annotator name starting with this marks simulated labels

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS labels (
    user        INTEGER NOT NULL,
    item        INTEGER NOT NULL,
    label       TEXT    NOT NULL CHECK (label IN ({', '.join(repr(x) for x in LABELS)})),
    annotator   TEXT    NOT NULL DEFAULT '',
    labelled_at TEXT    NOT NULL DEFAULT '',
    note        TEXT    NOT NULL DEFAULT '',
    simulated   INTEGER NOT NULL CHECK (simulated IN (0, 1)),
    source_file TEXT    NOT NULL,
    source_sha256 TEXT  NOT NULL,
    imported_at TEXT    NOT NULL,
    PRIMARY KEY (user, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imports (
    file        TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    rows        INTEGER NOT NULL,
    replaced    INTEGER NOT NULL,
    simulated   INTEGER NOT NULL,
    imported_at TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS finetune_pairs (
    user        INTEGER NOT NULL,
    item        INTEGER NOT NULL,
    adapter     TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('train', 'validation')),
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (user, item, adapter)
) WITHOUT ROWID;
"""
LABEL_COLUMNS = ("user", "item", "label", "annotator", "labelled_at", "note", "simulated",
                 "source_file", "source_sha256", "imported_at")


def audit_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / AUDIT_DIR


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class AuditStore:
    """The audit database of one run folder (``RUN/audit/audit.sqlite``)."""

    def __init__(self, run_dir: str | Path, *, create: bool = True) -> None:
        self.path = audit_dir(run_dir) / AUDIT_DB
        if not create and not self.path.is_file():
            raise UserError(f"{self.path}: no audited labels here; run `audit import` (or "
                            "`audit simulate`) first")
        existed = self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn, problem = None, None
        try:
            conn = sqlite3.connect(self.path, timeout=60.0)
            conn.execute("PRAGMA journal_mode=WAL")
            problem = integrity_problem(conn) if existed else None
            if problem is None:
                with conn:
                    conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                if conn is not None:
                    conn.close()
                raise UserError(f"{self.path}: not a usable audit store ({exc})") from None
            problem = str(exc)
        if problem is not None:
            conn.close()
            raise UserError(_damaged(self.path, problem))
        self.conn = conn

    # ------------------------------------------------------------------ writing
    def add_labels(self, rows: Sequence[dict], *, source_file: str, source_sha256: str) -> int:
        """Store validated rows (dicts with user, item, label and optionally annotator,
        labelled_at, note) from one file, in one transaction; returns how many replaced an
        earlier label of the same pair."""
        stamp = now()
        records = []
        for r in rows:
            annotator = str(r.get("annotator") or "")
            records.append((int(r["user"]), int(r["item"]), str(r["label"]), annotator,
                            str(r.get("labelled_at") or ""), str(r.get("note") or ""),
                            int(annotator.lower().startswith(SIMULATED_PREFIX)),
                            source_file, source_sha256, stamp))
        with self.conn:  # the whole file or nothing
            before = self._existing({(r[0], r[1]) for r in records})
            self.conn.executemany(
                f"INSERT OR REPLACE INTO labels ({', '.join(LABEL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(LABEL_COLUMNS))})", records)
            simulated = int(bool(records) and all(r[6] for r in records))
            self.conn.execute("INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?)",
                              (source_file, source_sha256, len(records), before, simulated,
                               stamp))
        return before

    def _existing(self, pairs: set[tuple[int, int]]) -> int:
        if not pairs:
            return 0
        have = {(int(u), int(i)) for u, i in self.conn.execute("SELECT user, item FROM labels")}
        return len(pairs & have)

    def mark_finetune(self, pairs: Iterable[tuple[int, int]], adapter: str, role: str) -> None:
        """Record that ``pairs`` trained (or validated) ``adapter`` (one transaction)."""
        stamp = now()
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO finetune_pairs VALUES (?, ?, ?, ?, ?)",
                [(int(u), int(i), adapter, role, stamp) for u, i in pairs])

    # ------------------------------------------------------------------ reading
    def labels(self):
        """Every audited label as a DataFrame (columns :data:`LABEL_COLUMNS`)."""
        import pandas as pd

        try:
            return pd.read_sql_query(
                f"SELECT {', '.join(LABEL_COLUMNS)} FROM labels ORDER BY user, item", self.conn)
        except Exception as exc:  # noqa: BLE001 - pandas wraps sqlite3's error in its own type
            if not is_damage(exc):
                raise
            raise UserError(_damaged(self.path, str(exc.__cause__ or exc))) from exc

    def finetune_pairs(self, role: str | None = None) -> set[tuple[int, int]]:
        sql, args = "SELECT user, item FROM finetune_pairs", ()
        if role is not None:
            sql, args = sql + " WHERE role = ?", (role,)
        return {(int(u), int(i)) for u, i in self.conn.execute(sql, args)}

    def finetune_adapters(self) -> list[dict]:
        cur = self.conn.execute(
            "SELECT adapter, role, COUNT(*) FROM finetune_pairs GROUP BY 1, 2 ORDER BY 1, 2")
        return [{"adapter": a, "role": r, "pairs": int(n)} for a, r, n in cur]

    def imports(self) -> list[dict]:
        cur = self.conn.execute("SELECT file, sha256, rows, replaced, simulated, imported_at "
                                "FROM imports ORDER BY imported_at")
        return [{"file": f, "sha256": s, "rows": int(n), "replaced": int(r),
                 "simulated": bool(sim), "imported_at": t} for f, s, n, r, sim, t in cur]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "AuditStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _damaged(path: Path, why: str) -> str:
    # The labels are people's work and came from files: the way back is those files.
    return (f"{path}: the audit store is damaged ({why}); move it aside (keep it) and import "
            f"your label files again with `audit import {path.parent.parent} FILE`; tune again "
            "any adapter tuned on them, or `audit report` counts their training pairs")


def labels_hash(frame) -> str:
    """sha256 of a label set: its sorted ``user,item,label`` lines (what a model learned)."""
    rows = sorted((int(u), int(i), str(lab)) for u, i, lab in
                  zip(frame["user"], frame["item"], frame["label"]))
    return sha256_text("\n".join(f"{u},{i},{lab}" for u, i, lab in rows))


def trained_pairs(run_dir: str | Path) -> set[tuple[int, int]]:
    """Pairs of ``RUN`` that trained any adapter (empty without an audit store): what every
    evaluation of a rater on this run must leave out (e.g. the identification metrics)."""
    if not (audit_dir(run_dir) / AUDIT_DB).is_file():
        return set()
    with AuditStore(run_dir) as store:
        return store.finetune_pairs(role="train")


def without_trained_pairs(frame, run_dir: str | Path):
    """``(rows, n_left_out)``: the rows of ``frame`` (columns ``user``, ``item``) whose pair
    trained no adapter of ``RUN`` (LoRA or probe), and how many were left out; the
    identification figures are computed on these only, as the audit report's are."""
    trained = trained_pairs(run_dir)
    if not trained or not len(frame):
        return frame, 0
    keep = [(int(u), int(i)) not in trained for u, i in zip(frame["user"], frame["item"])]
    return frame[keep], int(len(frame) - sum(keep))


def load_audits(run_dir: str | Path):
    """The run's audited labels minus the pairs that trained any adapter (none without an
    audit store), as :class:`~llmhni_local.verdicts.decide.Audits`, the form the verdict rules
    take them in."""
    if not (audit_dir(run_dir) / AUDIT_DB).is_file():
        return Audits.empty()
    with AuditStore(run_dir, create=False) as store:
        labels = store.labels()[["user", "item", "label"]]
        trained = frozenset(store.finetune_pairs(role="train"))
    keep = [(int(u), int(i)) not in trained for u, i in zip(labels["user"], labels["item"])]
    return Audits(labels[keep].reset_index(drop=True), trained, int(len(labels)))
