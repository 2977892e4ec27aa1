"""Salvage a damaged judgment store: ``llmhni judgments repair RUN``.

Every readable row is copied into a fresh store built under a temporary name beside the old
one; the damaged file is kept as ``judgments.sqlite.damaged-<UTC time>`` and the fresh store
takes its name in one rename. The store is keyed, so rating again rates only the rows lost.

How rows are read past damage (plain ``sqlite3``, no recovery extension). The table is a
B-tree in key order (``WITHOUT ROWID``, key ``(user, item, view, model_id, adapter,
prompt_hash)``). A scan in key order reads up to the first unreadable page. A seek (``WHERE
(user, item) >= (u, i) LIMIT 1``) walks down from the root, so it fails only when the pages
on its own path are damaged: the first readable key after the damage is found by seeking
further and further ahead (steps 1, 2, 4, ...) over ``(user, item)`` and then bisecting back
to the first seek that works. The rows of the one ``(user, item)`` that straddles the damage
are read backwards from its end. So one bad page loses about its own rows, and a bad interior
page loses the pages below it. How many were lost is exact, read off the damaged store's own
``row_count`` (kept by triggers in each write's transaction); where that page is unreadable
too, the loss is reported as unknown.

When rows were lost, ``rating.json`` is set aside (``rating.json.before-repair-<time>``), so
``llmhni run`` sees the rating stage unfinished and rates again (only the rows lost), and a
``verdicts`` before that is refused instead of deciding on a store with holes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path
from llmhni_local.judgments.store import (
    _COUNT_SCHEMA,
    _SCHEMA,
    COLUMNS,
    STORE_NAME,
    integrity_problem,
)

RATING_MANIFEST = "rating.json"  # judgments/run.py's; set aside when rows were lost
_KEY = COLUMNS[:6]  # user, item, view, model_id, adapter, prompt_hash
_ORDER = ", ".join(_KEY)
_DESC = ", ".join(f"{c} DESC" for c in _KEY)
_COLS = ", ".join(COLUMNS)
# (user, item) as one integer, so "seek further ahead" is arithmetic: ids are 32-bit signed
_HALF = 1 << 31
_LIN_MAX = (1 << 64) - 1
_BATCH = 1000  # rows per insert into the fresh store


@dataclass(frozen=True)
class RepairReport:
    """What ``judgments repair`` did."""

    path: Path
    problem: str | None  # quick_check's first finding; None: the store was healthy
    kept: int  # rows in the store now
    recorded: int | None  # rows the damaged store counted; None where unreadable
    damaged: Path | None = None  # where the damaged file was kept
    rating_manifest: Path | None = None  # where rating.json was set aside

    @property
    def healthy(self) -> bool:
        return self.problem is None

    @property
    def lost(self) -> int | None:
        if self.recorded is None or self.recorded < self.kept:
            return None
        return self.recorded - self.kept


def repair_store(run_dir: str | Path) -> RepairReport:
    """Copy every readable row of ``RUN/judgments.sqlite`` into a fresh store, keep the
    damaged file beside it, and say how many rows were kept and lost (a healthy store is left
    as it is). Hold the run folder's lock (:mod:`llmhni_local.core.runlock`) while calling."""
    run_dir = Path(run_dir)
    path = run_dir / STORE_NAME
    if not path.is_file():
        raise UserError(f"{path}: no judgment store here; nothing to repair")
    src = sqlite3.connect(path, timeout=60.0)
    try:
        problem = integrity_problem(src)
        if problem is None:
            (n,) = src.execute("SELECT COUNT(*) FROM judgments").fetchone()
            return RepairReport(path, None, int(n), int(n))
        recorded = _recorded(src)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        damaged = path.with_name(f"{path.name}.damaged-{stamp}")
        with atomic_path(path) as tmp:
            kept = _copy_readable(src, tmp)
            shutil.copymode(path, tmp)  # the fresh store readable by whoever read the old one
            _checkpoint_and_close(src)
            _keep_damaged(path, damaged)
        # the fresh store is in place (atomic_path renamed it onto path)
    finally:
        src.close()
    report = RepairReport(path, problem, kept, recorded, damaged)
    if report.lost != 0:
        manifest = run_dir / RATING_MANIFEST
        if manifest.is_file():
            aside = run_dir / f"{RATING_MANIFEST}.before-repair-{stamp}"
            os.replace(manifest, aside)
            report = RepairReport(path, problem, kept, recorded, damaged, aside)
    return report


def readable_rows(conn: sqlite3.Connection) -> Iterator[tuple]:
    """Every row of ``judgments`` that can be read, in key order, stepping over damage."""
    start = 0  # where the next scan starts: (user, item) as one integer (_lin)
    while True:
        last = None  # the last row this scan read
        try:
            for row in _scan(conn, start):
                last = row
                yield row
            return  # the end of the table
        except sqlite3.DatabaseError:
            pass  # damage right after `last` (or at `start`)
        if last is not None:
            yield from _tail(conn, last)
            lo = _lin(last[0], last[1]) + 1
        else:
            lo = start + 1  # every start is past the one before: the loop ends
        nxt = _first_readable(conn, lo)
        if nxt is None:
            return  # damage to the end
        if nxt - 1 >= lo:  # the (user, item) just before it may have rows past the damage
            yield from _tail(conn, (*_unlin(nxt - 1), None))
        start = nxt


# ---------------------------------------------------------------------------- internals
def _scan(conn: sqlite3.Connection, start: int) -> Iterator[tuple]:
    return conn.execute(f"SELECT {_COLS} FROM judgments WHERE (user, item) >= (?, ?) "
                        f"ORDER BY {_ORDER}", _unlin(start))


def _tail(conn: sqlite3.Connection, last: tuple) -> Iterator[tuple]:
    """Rows of ``last``'s (user, item) after ``last``'s key (all of them when its third field
    is None), read backwards from the end of that (user, item) until the damage."""
    user, item = last[0], last[1]
    where, args = "user = ? AND item = ?", [user, item]
    if last[2] is not None:
        where += f" AND ({', '.join(_KEY[2:])}) > ({', '.join('?' * 4)})"
        args += list(last[2:len(_KEY)])
    rows = []
    with contextlib.suppress(sqlite3.DatabaseError):
        for row in conn.execute(f"SELECT {_COLS} FROM judgments WHERE {where} ORDER BY {_DESC}",
                                args):
            rows.append(row)
    return iter(rows[::-1])


def _seek_ok(conn: sqlite3.Connection, lin: int) -> bool:
    try:
        conn.execute(f"SELECT user FROM judgments WHERE (user, item) >= (?, ?) ORDER BY {_ORDER} "
                     "LIMIT 1", _unlin(lin)).fetchall()
    except sqlite3.DatabaseError:
        return False
    return True


def _first_readable(conn: sqlite3.Connection, lo: int) -> int | None:
    """The smallest point at or after ``lo`` from which a seek works (None: none does)."""
    if _seek_ok(conn, lo):
        return lo
    bad, step = lo, 1
    while True:  # gallop ahead until a seek works
        good = min(lo + step, _LIN_MAX)
        if _seek_ok(conn, good):
            break
        if good == _LIN_MAX:
            return None
        bad, step = good, step * 2
    while good - bad > 1:  # then bisect back to the first one that does
        mid = (bad + good) // 2
        if _seek_ok(conn, mid):
            good = mid
        else:
            bad = mid
    return good


def _lin(user: int, item: int) -> int:
    return ((int(user) + _HALF) << 32) + (int(item) + _HALF)


def _unlin(lin: int) -> tuple[int, int]:
    return (lin >> 32) - _HALF, (lin & 0xFFFFFFFF) - _HALF


def _recorded(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute("SELECT n FROM row_count WHERE id = 0").fetchone()
    except sqlite3.DatabaseError:
        return None  # a store from before row_count, or its page is damaged too
    return int(row[0]) if row else None


def _copy_readable(src: sqlite3.Connection, tmp: Path) -> int:
    """Build a fresh store at ``tmp`` from every readable row of ``src``; returns its rows."""
    dst = sqlite3.connect(tmp)
    try:
        dst.execute("PRAGMA recursive_triggers=ON")
        dst.executescript(_SCHEMA)
        dst.executescript(_COUNT_SCHEMA)
        sql = (f"INSERT OR IGNORE INTO judgments ({_COLS}) "
               f"VALUES ({', '.join('?' * len(COLUMNS))})")
        batch: list[tuple] = []
        for row in readable_rows(src):
            batch.append(row)
            if len(batch) >= _BATCH:
                _insert(dst, sql, batch)
                batch = []
        _insert(dst, sql, batch)
        (n,) = dst.execute("SELECT COUNT(*) FROM judgments").fetchone()
        problem = integrity_problem(dst)
        if problem is not None:  # a bug of ours, not the disk's: stop before replacing anything
            raise RuntimeError(f"{tmp}: the rebuilt store fails quick_check ({problem})")
    finally:
        dst.close()
    return int(n)


def _insert(dst: sqlite3.Connection, sql: str, rows: list[tuple]) -> None:
    try:
        with dst:
            dst.executemany(sql, rows)
    except sqlite3.IntegrityError:  # a garbled row from a damaged page: keep the good ones
        for row in rows:
            with contextlib.suppress(sqlite3.IntegrityError), dst:
                dst.execute(sql, row)


def _checkpoint_and_close(src: sqlite3.Connection) -> None:
    # Fold the write-ahead log into the damaged file so that no -wal is left to be read
    # with the fresh store (SQLite would replay an old log onto a new file of the same name).
    with contextlib.suppress(sqlite3.DatabaseError):
        src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    src.close()


def _keep_damaged(path: Path, damaged: Path) -> None:
    try:
        os.link(path, damaged)  # the damaged file stays whole under its new name
    except OSError:
        shutil.copy2(path, damaged)
    for suffix in ("-wal", "-shm"):  # left only if another process still had the file open
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, damaged.with_name(damaged.name + suffix))
