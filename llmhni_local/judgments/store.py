"""The judgment store: one SQLite file per run folder (``RUN/judgments.sqlite``).

One row per ``(user, item, view, model_id, adapter, prompt_hash)`` with the raw answer, the
parsed label (NULL when the answer is not a label), the label probabilities, the label mass,
an ``ok`` flag, the candidate kind and the time it was written. Rows are written one
transaction per batch, in WAL mode: a process killed at any moment loses at most the batch in
flight, and never leaves a half-written row or batch. ``missing`` tells the rating stage what
is not stored yet, so running it again skips what is done.

Damage and full disks. Opening an existing store runs ``PRAGMA quick_check``; a damaged file is
one line naming it and the way out, ``judgments repair RUN`` (:mod:`llmhni_local.judgments.repair`),
which copies every readable row into a fresh store. ``row_count`` keeps the number of rows
(kept by triggers, in the same transaction as the rows), so a repair can say exactly how many
rows it lost. A batch that finds the disk full is rolled back whole and is one line too: every
batch before it stays stored, and rating again resumes after them.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, disk_full_reason
from llmhni_local.engine.api import LABELS, Judgment

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
    score       REAL,
    PRIMARY KEY (user, item, view, model_id, adapter, prompt_hash)
) WITHOUT ROWID;
"""
# The number of rows, kept in step by triggers (so by every writer, in the rows' transaction;
# a REPLACE counts out and in because each connection sets recursive_triggers). A store made
# before the table existed is counted once when first opened.
_COUNT_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS row_count (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
INSERT INTO row_count SELECT 0, (SELECT COUNT(*) FROM judgments)
    WHERE NOT EXISTS (SELECT 1 FROM row_count);
CREATE TRIGGER IF NOT EXISTS judgments_count_in AFTER INSERT ON judgments
    BEGIN UPDATE row_count SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS judgments_count_out AFTER DELETE ON judgments
    BEGIN UPDATE row_count SET n = n - 1 WHERE id = 0; END;
COMMIT;
"""
_COUNT_TRIGGERS = ("judgments_count_in", "judgments_count_out")
COLUMNS: tuple[str, ...] = ("user", "item", "view", "model_id", "adapter", "prompt_hash", "kind",
                            "text", "label", "p_high", "p_medium", "p_low", "label_mass", "ok",
                            "created_at", "score")


@dataclass(frozen=True)
class Key:
    """What identifies one set of answers: the model, its adapter and the prompt."""

    model_id: str
    adapter: str
    prompt_hash: str


#: Judgments made elsewhere are stored under ``Key("import:NAME", "", "imported")``
#: (``judgments/imported.py``): a model's id is a registry name with content hashes
#: (``backends/common.py: rater_id``) and never starts with this prefix, so the two cannot meet.
IMPORT_PREFIX, IMPORT_PROMPT = "import:", "imported"
#: What a source's name may hold: it names a file (``RUN/ratings/NAME.json``) too.
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def source_problem(name: str | None) -> str | None:
    """Why ``name`` cannot name a source of imported judgments (``None``: it can)."""
    if not (name or "").strip():
        return "the source name is empty (say where the judgments were made, e.g. lab-llama70b)"
    if not SOURCE_NAME.fullmatch(name):
        return (f"source name {name!r}: use letters, digits, '.', '-' and '_' (at most 100, "
                "starting with a letter or digit)")
    return None


def imported_key(source: str) -> Key:
    """The key the judgments of source ``source`` are stored under (both views)."""
    return Key(IMPORT_PREFIX + source, "", IMPORT_PROMPT)


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
        existed = self.path.is_file()
        if not create and not existed:
            raise UserError(f"{self.path}: no judgment store here; run the `rate` stage first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = None
        try:
            self.conn = connect(self.path)
            if existed:
                problem = integrity_problem(self.conn)
                if problem is not None:
                    raise UserError(damaged_message(self.path, problem))
            with self.conn:
                self.conn.executescript(_SCHEMA)
            cols = {r[1] for r in self.conn.execute("PRAGMA table_info(judgments)")}
            if "score" not in cols:  # a store from before the likelihood reader
                with self.conn:
                    self.conn.execute("ALTER TABLE judgments ADD COLUMN score REAL")
            have = {n for (n,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
            if not set(_COUNT_TRIGGERS) <= have:
                self.conn.executescript(_COUNT_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if self.conn is not None:
                self.conn.close()
            err = store_error(self.path, exc, "opening")
            raise err or UserError(f"{self.path}: not a usable judgment store ({exc})") from None
        except BaseException:
            if self.conn is not None:
                self.conn.close()
            raise

    # ------------------------------------------------------------------ writing
    def add(self, view: str, key: Key, pairs: Sequence[tuple[int, int, str | None]],
            judgments: Sequence[Judgment]) -> int:
        """Store one batch of one view in one transaction; returns the number of failures."""
        rows, failures = make_rows(view, key, pairs, judgments)
        self.add_rows(rows)
        return failures

    def add_rows(self, rows: Iterable[tuple]) -> None:
        """Insert rows laid out as :data:`COLUMNS`, all in one transaction."""
        with self.conn:  # one transaction: all rows or none (a full disk: see _Connection)
            self.conn.executemany(
                f"INSERT OR REPLACE INTO judgments ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})", rows)

    def replace_rows(self, key: Key, rows: Iterable[tuple]) -> int:
        """Every row of ``key`` replaced by ``rows`` (laid out as :data:`COLUMNS`) in one
        transaction, so a source imported again holds its new file's rows and none of the old
        file's; returns the number of rows removed."""
        where, args = _where(key)
        with self.conn:
            removed = self.conn.execute(f"DELETE FROM judgments{where}", args).rowcount
            self.conn.executemany(
                f"INSERT INTO judgments ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})", rows)
        return int(removed)

    @contextlib.contextmanager
    def reading(self):
        """Turn a damaged page met while reading (sqlite3's error, or pandas' wrapping of it)
        into the one-line damaged-store error."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - pandas wraps sqlite3's error in its own type
            if not is_damage(exc):
                raise
            raise UserError(damaged_message(self.path, _reason(exc))) from exc

    # ------------------------------------------------------------------ reading
    def stored_pairs(self, view: str, key: Key) -> set[tuple[int, int]]:
        with self.reading():
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
        with self.reading():
            n, bad = self.conn.execute(f"SELECT COUNT(*), COALESCE(SUM(1 - ok), 0) FROM "
                                       f"judgments{where}", args).fetchone()
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
        with self.reading():
            return pd.read_sql_query(sql, self.conn, params=args)

    def stats(self) -> dict[str, Any]:
        """Counts per model and prompt, view, candidate kind and label; failure shares."""
        n, bad = self.counts()
        out: dict[str, Any] = {"path": str(self.path), "rows": n, "failures": bad,
                               "failure_share": bad / n if n else 0.0, "runs": []}
        with self.reading():
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

    def export(self, path: str | Path, fmt: str = "csv", key: Key | None = None, *,
               views: dict[str, Key] | None = None,
               raw_ids: tuple[Sequence[str], Sequence[str]] | None = None) -> int:
        """Write every row (or one key's, or ``views``' as :meth:`frame`) as csv or parquet,
        atomically; returns the row count.

        With ``raw_ids`` (the data's ``user_ids`` and ``item_ids``), ``user`` and ``item`` hold
        the raw ids and the indices move to ``user_index`` and ``item_index``: the file is
        then one ``judgments import`` reads as it is (docs/IMPORTING.md).
        """
        if fmt not in ("csv", "parquet"):
            raise UserError(f"export format must be csv or parquet, got {fmt!r}")
        df = self.frame(key, views=views)
        if raw_ids is not None:
            df = with_raw_ids(df, *raw_ids, where=self.path)
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


def with_raw_ids(frame, user_ids: Sequence[str], item_ids: Sequence[str], *,
                 where: str | Path = ""):
    """``frame`` (store rows) with ``user`` and ``item`` as raw ids and the indices as
    ``user_index`` and ``item_index`` beside them (the rest in place)."""
    out = frame.copy()
    for col, ids in (("user", user_ids), ("item", item_ids)):
        idx = out[col].to_numpy(np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(ids)):
            raise UserError(f"{where}: a stored {col} index ({int(idx.max())}) is beyond the "
                            f"data's {len(ids)} {col} ids (the store was made from other data)")
        lookup = np.asarray(list(ids), dtype=object)
        at = out.columns.get_loc(col)
        out[col] = lookup[idx] if len(idx) else np.array([], dtype=object)
        out.insert(at + 1, f"{col}_index", idx)
    return out


class _Connection(sqlite3.Connection):
    """A store's connection: a transaction (``with conn:``, so every writer's: the rating
    stage's batches, a Ray job's shard merges) that fails for want of room or on a damaged page
    is rolled back by SQLite and raised as one line (:func:`store_error`)."""

    path: Path

    def __exit__(self, exc_type, exc, tb):
        try:
            out = super().__exit__(exc_type, exc, tb)  # commit, or roll back after an error
        except (sqlite3.DatabaseError, OSError) as failed:  # the commit itself
            err = store_error(self.path, failed, "writing")
            if err is None:
                raise
            raise err from failed
        if isinstance(exc, (sqlite3.DatabaseError, OSError)):
            err = store_error(self.path, exc, "writing")
            if err is not None:
                raise err from exc
        return out


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the store at ``path``, set up as every writer of it must be."""
    conn = sqlite3.connect(path, timeout=60.0, factory=_Connection)
    conn.path = Path(path)
    # WAL: a committed batch is in the log file even if the process dies the next instant;
    # NORMAL sync is safe against process kills (not power loss), and cheap.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA recursive_triggers=ON")  # REPLACE's delete keeps row_count right
    return conn


def integrity_problem(conn: sqlite3.Connection) -> str | None:
    """The first problem ``PRAGMA quick_check`` finds (None: none). It reads every page but
    checks no index against its table, so it costs about one scan of the file."""
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return _reason(exc)
    first = str(rows[0][0]) if rows else "no answer"
    if first == "ok":
        return None
    # "*** in database main ***\nPage 102: btreeInitPage() returns error code 11": one line
    return " ".join(first.replace("*** in database main ***", "").split())


def store_error(path: Path, exc: BaseException, doing: str) -> UserError | None:
    """The one-line error for a full disk or a damaged file met while ``doing`` something to
    the store at ``path``; None for anything else (a refused row, say: the original says
    more)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return None
    if is_damage(exc):
        return UserError(damaged_message(path, _reason(exc)))
    why = room_problem(path, exc)
    if why is None:
        return None
    return UserError(f"{path}: {why} while {doing} judgments; the batch in flight was rolled "
                     "back and every batch before it is kept; make room and rate again: it "
                     "resumes after them")


def damaged_message(path: str | Path, why: str) -> str:
    path = Path(path)
    return (f"{path}: the judgment store is damaged ({why}); `llmhni judgments repair "
            f"{path.parent}` copies every readable row into a fresh store and keeps the damaged "
            "file beside it; rating again then rates only the rows lost")


_DAMAGE_NAMES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_DAMAGE_WORDS = ("malformed", "not a database", "corrupt")


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: pandas re-raises sqlite3's errors as its own) says a
    SQLite file is damaged."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, sqlite3.DatabaseError):
            name = getattr(exc, "sqlite_errorname", "") or ""
            if name.startswith(_DAMAGE_NAMES):
                return True
            return any(w in str(exc).lower() for w in _DAMAGE_WORDS)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _reason(exc: BaseException) -> str:
    while exc.__cause__ is not None and not isinstance(exc, sqlite3.Error):
        exc = exc.__cause__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def room_problem(path: Path, exc: BaseException) -> str | None:
    """Why a write to the SQLite file ``path`` failed if it was for want of room, else None.

    SQLite says SQLITE_FULL for a full disk but only "disk I/O error" (SQLITE_IOERR_WRITE) when
    a write passes the file-size limit, so an I/O error is checked against the limit and the
    free space (:func:`llmhni_local.core.io.disk_full_reason`) with the files a write grows.
    """
    if isinstance(exc, OSError):
        return disk_full_reason(path, exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    full = name == "SQLITE_FULL" or "disk is full" in str(exc)
    if not (full or name.startswith("SQLITE_IOERR") or "disk I/O error" in str(exc)):
        return None
    files = [path.with_name(path.name + s) for s in ("", "-wal", "-journal")]
    why = disk_full_reason(path, exc, written=files)
    if why is None and full:
        why = "disk full"
    return why


def make_rows(view: str, key: Key, pairs: Sequence[tuple[int, int, str | None]],
              judgments: Sequence[Judgment]) -> tuple[list[tuple], int]:
    """Rows (laid out as :data:`COLUMNS`) of one view's judgments, and how many failed.

    A failure is an answer whose label is ``None`` (and, from the likelihood reader, whose
    score is missing): it is stored with its raw text, NULL label and ``ok = 0``, never given a
    label or a score.
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
        score = _f(j.score)
        ok = j.label is not None or score is not None
        failures += not ok
        rows.append((int(u), int(i), view, key.model_id, key.adapter, key.prompt_hash,
                     kind, str(j.text), j.label, _f(probs.get("High")), _f(probs.get("Medium")),
                     _f(probs.get("Low")), _f(j.label_mass), int(ok), now, score))
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
