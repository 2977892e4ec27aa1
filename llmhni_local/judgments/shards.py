"""Parquet shards of judgment rows and their exactly-once merge into the judgment store.

A distributed rating job (``judgments/ray_job.py``) does not let its workers write the SQLite store:
each worker writes every batch it rates as one Parquet file in ``RUN/shards/<job>/``, laid out
as the store's rows (:data:`~llmhni_local.judgments.store.COLUMNS`). The file is written under a
temporary name and renamed, so a reader never sees half a shard. Its name is a hash of the
row keys ``(user, item, view, model_id, adapter, prompt_hash)``, so a batch rated again
(after its worker was lost) lands on the same name.

The driver merges each shard into ``judgments.sqlite`` in one transaction with
``INSERT OR IGNORE`` on the primary key, and deletes the shard only after the commit. Hence:

* a shard merged twice (the driver killed between the commit and the delete, or a batch rated
  twice) adds nothing the second time: no duplicates, and the first stored answer stays;
* a shard never merged (the driver killed first) is merged by the next run, before it decides
  what is missing (:func:`merge_pending`): nothing is rated twice that was rated once;
* a merge killed half-way is rolled back by SQLite: nothing is half-merged.

Only one job may use a run folder's shards at a time (:func:`job_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterator, Sequence

from llmhni_local.core.errors import DataError, UserError
from llmhni_local.core.io import atomic_path
from llmhni_local.judgments.store import COLUMNS

SHARDS_DIR = "shards"
SUFFIX = ".parquet"
_KEY_COLUMNS = 6  # user, item, view, model_id, adapter, prompt_hash: the primary key


def _schema():
    import pyarrow as pa

    types = {"user": pa.int64(), "item": pa.int64(), "p_high": pa.float64(),
             "p_medium": pa.float64(), "p_low": pa.float64(), "label_mass": pa.float64(),
             "ok": pa.int64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])


def shard_name(rows: Sequence[tuple]) -> str:
    """The shard's file name: a hash of its rows' keys (the same batch, the same name)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(tuple(row[:_KEY_COLUMNS])).encode())
    return h.hexdigest()[:32] + SUFFIX


def write_shard(folder: str | Path, rows: Sequence[tuple]) -> Path:
    """Write ``rows`` (laid out as :data:`COLUMNS`) as one Parquet shard in ``folder``,
    atomically (temporary name, then rename); returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise ValueError("a shard holds at least one row")
    schema = _schema()
    table = pa.Table.from_pylist([dict(zip(COLUMNS, r)) for r in rows], schema=schema)
    path = Path(folder) / shard_name(rows)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())  # the rename below must not publish an unwritten file
    return path


def read_shard(path: str | Path) -> list[tuple]:
    """The rows of one shard, laid out as :data:`COLUMNS`."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise DataError(f"{path}: not a readable judgment shard ({exc})") from None
    if table.column_names != list(COLUMNS):
        raise DataError(f"{path}: shard columns {table.column_names} are not the store's")
    cols = [table.column(c).to_pylist() for c in COLUMNS]
    return list(zip(*cols))


def merge_shard(store, path: str | Path) -> tuple[int, int]:
    """Merge one shard into ``store`` in one transaction, then delete it.

    Returns ``(rows added, failures among them)``; rows whose key is already stored are left
    as they are (``INSERT OR IGNORE``), so merging a shard again adds nothing.
    """
    rows = read_shard(path)
    ok_at = COLUMNS.index("ok")
    sql = (f"INSERT OR IGNORE INTO judgments ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(COLUMNS))})")
    with store.conn:  # one transaction: the whole shard or nothing
        added_ok = store.conn.executemany(sql, [r for r in rows if r[ok_at]]).rowcount
        added_bad = store.conn.executemany(sql, [r for r in rows if not r[ok_at]]).rowcount
    Path(path).unlink()  # only once its rows are committed
    return max(added_ok, 0) + max(added_bad, 0), max(added_bad, 0)


def pending_shards(run_dir: str | Path) -> list[Path]:
    """Finished shards left in ``RUN/shards/`` (of any job), oldest job first."""
    root = Path(run_dir) / SHARDS_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob(f"*/*{SUFFIX}") if not p.name.startswith(".")),
                  key=lambda p: (p.parent.stat().st_mtime, str(p)))


def merge_pending(store, run_dir: str | Path) -> tuple[int, int, int]:
    """Merge every finished shard left by earlier jobs; remove unfinished temporary files
    and empty job folders. Call with :func:`job_lock` held. Returns ``(rows added, failures
    among them, shards merged)``."""
    added = bad = n = 0
    for path in pending_shards(run_dir):
        a, b = merge_shard(store, path)
        added, bad, n = added + a, bad + b, n + 1
    root = Path(run_dir) / SHARDS_DIR
    if root.is_dir():
        for job in root.iterdir():
            if job.is_dir():
                for tmp in job.glob(".*.tmp"):  # a write its worker never finished
                    tmp.unlink()
                (job / ".job").unlink(missing_ok=True)  # the killed job's marker
                with contextlib.suppress(OSError):
                    job.rmdir()  # only when empty
    return added, bad, n


@contextlib.contextmanager
def job_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``RUN/shards/.lock`` for one job; a second job on the same run folder is refused
    (its merge of leftover shards would race the first job's workers)."""
    root = Path(run_dir) / SHARDS_DIR
    root.mkdir(parents=True, exist_ok=True)
    f = open(root / ".lock", "w")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{root}: another rating job is using this run folder; wait for "
                            "it to end") from None
        yield root
    finally:
        f.close()  # releases the lock
