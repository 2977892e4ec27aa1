"""The judgment store: one SQLite file per run folder (``RUN/judgments.sqlite``).

One row per ``(user, item, view, model_id, adapter, prompt_hash)`` with the raw answer, the
parsed label (NULL when the answer is not a label), the label probabilities, the label mass,
an ``ok`` flag, the candidate kind and the time it was written. Rows are written one
transaction per batch, in WAL mode: a process killed at any moment loses at most the batch in
flight, and never leaves a half-written row or batch. ``missing`` tells the rating stage what
is not stored yet, so running it again skips what is done.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from llmhni_local.errors import UserError
from llmhni_local.llm.base import LABELS, Judgment

STORE_NAME = "judgments.sqlite"
VIEWS: tuple[str, ...] = ("user", "item")  # user-centric, item-centric

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS judgments (
    user        INTEGER NOT NULL,
    item        INTEGER NOT NULL,
    view        TEXT    NOT NULL CHECK (view IN ({', '.join(repr(v) for v in VIEWS)})),
    model_id    TEXT    NOT NULL,
    adapter     TEXT    NOT NULL DEFAULT '',
    prompt_hash TEXT    NOT NULL,
    kind        TEXT,
    text        TEXT    NOT NULL,
    label       TEXT CHECK (label IS NULL OR label IN ({', '.join(repr(x) for x in LABELS)})),
    p_high      REAL,
    p_medium    REAL,
    p_low       REAL,
    label_mass  REAL,
    ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (user, item, view, model_id, adapter, prompt_hash)
) WITHOUT ROWID;
"""
COLUMNS: tuple[str, ...] = ("user", "item", "view", "model_id", "adapter", "prompt_hash", "kind",
                            "text", "label", "p_high", "p_medium", "p_low", "label_mass", "ok",
                            "created_at")


@dataclass(frozen=True)
class Key:
    """What identifies one set of answers: the model, its adapter and the prompt."""

    model_id: str
    adapter: str
    prompt_hash: str


class JudgmentStore:
    """The SQLite judgment store of one run folder.

    Example:
        >>> import tempfile
        >>> s = JudgmentStore(tempfile.mkdtemp())
        >>> k = Key("m", "", "h")
        >>> s.add("user", k, [(0, 1, "observed")], [Judgment("High", "High", None)])  # failures
        0
        >>> s.missing([(0, 1), (0, 2)], "user", k)
        [(0, 2)]
    """

    def __init__(self, run_dir: str | Path, *, create: bool = True) -> None:
        self.path = Path(run_dir) / STORE_NAME
        if not create and not self.path.is_file():
            raise UserError(f"{self.path}: no judgment store here; run the `rate` stage first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60.0)
            # WAL: a committed batch is in the log file even if the process dies the next
            # instant; NORMAL sync is safe against process kills (not power loss), and cheap.
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            with self.conn:
                self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: not a usable judgment store ({exc})") from None

    # ------------------------------------------------------------------ writing
    def add(self, view: str, key: Key, pairs: Sequence[tuple[int, int, str | None]],
            judgments: Sequence[Judgment]) -> int:
        """Store one batch of one view in one transaction; returns the number of failures."""
        rows, failures = make_rows(view, key, pairs, judgments)
        self.add_rows(rows)
        return failures

    def add_rows(self, rows: Iterable[tuple]) -> None:
        """Insert rows laid out as :data:`COLUMNS`, all in one transaction."""
        with self.conn:  # one transaction: all rows or none
            self.conn.executemany(
                f"INSERT OR REPLACE INTO judgments ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})", rows)

    # ------------------------------------------------------------------ reading
    def stored_pairs(self, view: str, key: Key) -> set[tuple[int, int]]:
        cur = self.conn.execute(
            "SELECT user, item FROM judgments WHERE view=? AND model_id=? AND adapter=? "
            "AND prompt_hash=?", (view, key.model_id, key.adapter, key.prompt_hash))
        return {(int(u), int(i)) for u, i in cur}

    def missing(self, pairs: Iterable[tuple[int, int]], view: str, key: Key) -> list[tuple[int, int]]:
        """The pairs with no stored row for this view and key, in the given order."""
        done = self.stored_pairs(view, key)
        return [(int(u), int(i)) for u, i in pairs if (int(u), int(i)) not in done]

    def counts(self, key: Key | None = None) -> tuple[int, int]:
        """``(rows, failures)``, for one key or for the whole store."""
        where, args = _where(key)
        n, bad = self.conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(1 - ok), 0) FROM judgments{where}", args).fetchone()
        return int(n), int(bad)

    def frame(self, key: Key | None = None, *, views: dict[str, Key] | None = None):
        """Rows as a pandas DataFrame: all, one key's, or ``views`` (each view with its own key,
        as the two views of one rating run have different prompts)."""
        import pandas as pd

        if views is not None:
            clauses, args = [], []
            for v, k in views.items():
                clauses.append("(view=? AND model_id=? AND adapter=? AND prompt_hash=?)")
                args += [v, k.model_id, k.adapter, k.prompt_hash]
            where = " WHERE " + " OR ".join(clauses) if clauses else " WHERE 0"
        else:
            where, args = _where(key)
        sql = (f"SELECT {', '.join(COLUMNS)} FROM judgments{where} "
               "ORDER BY user, item, view, model_id, adapter, prompt_hash")
        return pd.read_sql_query(sql, self.conn, params=args)

    def stats(self) -> dict[str, Any]:
        """Counts per model and prompt, view, candidate kind and label; failure shares."""
        n, bad = self.counts()
        out: dict[str, Any] = {"path": str(self.path), "rows": n, "failures": bad,
                               "failure_share": bad / n if n else 0.0, "runs": []}
        runs = self.conn.execute(
            "SELECT model_id, adapter, view, prompt_hash, COALESCE(kind, ''), "
            "COALESCE(label, 'failed'), COUNT(*) FROM judgments "
            "GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
        grouped: dict[tuple, dict] = {}
        for model, adapter, view, ph, kind, label, count in runs:
            g = grouped.setdefault((model, adapter, view, ph), {
                "model_id": model, "adapter": adapter, "view": view, "prompt_hash": ph,
                "rows": 0, "failures": 0, "labels": {lab: 0 for lab in (*LABELS, "failed")},
                "kinds": {}})
            g["rows"] += count
            g["failures"] += count if label == "failed" else 0
            g["labels"][label] += count
            k = g["kinds"].setdefault(kind or "unknown",
                                      {lab: 0 for lab in (*LABELS, "failed")})
            k[label] += count
        for g in grouped.values():
            g["failure_share"] = g["failures"] / g["rows"] if g["rows"] else 0.0
            out["runs"].append(g)
        return out

    def export(self, path: str | Path, fmt: str = "csv", key: Key | None = None) -> int:
        """Write every row (or one key's) as csv or parquet, atomically; returns the row count."""
        from llmhni_local.io import atomic_path

        if fmt not in ("csv", "parquet"):
            raise UserError(f"export format must be csv or parquet, got {fmt!r}")
        df = self.frame(key)
        with atomic_path(path) as tmp:
            if fmt == "csv":
                df.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False, engine="pyarrow")
        return len(df)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "JudgmentStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_rows(view: str, key: Key, pairs: Sequence[tuple[int, int, str | None]],
              judgments: Sequence[Judgment]) -> tuple[list[tuple], int]:
    """Rows (laid out as :data:`COLUMNS`) of one view's judgments, and how many failed.

    A failure is an answer whose label is ``None``: it is stored with its raw text, NULL label
    and ``ok = 0``, never given a label.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}")
    if len(pairs) != len(judgments):
        raise ValueError(f"{len(pairs)} pairs but {len(judgments)} judgments")
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = []
    failures = 0
    for (u, i, kind), j in zip(pairs, judgments):
        if j.label is not None and j.label not in LABELS:
            raise ValueError(f"backend returned the label {j.label!r}, not one of {LABELS}")
        probs = j.probs or {}
        ok = j.label is not None
        failures += not ok
        rows.append((int(u), int(i), view, key.model_id, key.adapter, key.prompt_hash,
                     kind, str(j.text), j.label, _f(probs.get("High")), _f(probs.get("Medium")),
                     _f(probs.get("Low")), _f(j.label_mass), int(ok), now))
    return rows, failures


def _where(key: Key | None) -> tuple[str, list[Any]]:
    if key is None:
        return "", []
    return (" WHERE model_id=? AND adapter=? AND prompt_hash=?",
            [key.model_id, key.adapter, key.prompt_hash])


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None
