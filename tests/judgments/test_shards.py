"""Parquet shards and their exactly-once merge (judgments/shards.py); no Ray needed."""

from __future__ import annotations

import os

import pytest

from llmhni_local.core.errors import DataError, UserError
from llmhni_local.engine.api import Judgment
from llmhni_local.judgments.shards import (
    SHARDS_DIR,
    job_lock,
    merge_pending,
    merge_shard,
    pending_shards,
    read_shard,
    write_shard,
)
from llmhni_local.judgments.store import JudgmentStore, Key, make_rows

KEY = Key("m@1", "", "h")


def _rows(pairs, label="High", mass=0.9):
    judgments = [Judgment(label or "hm", label, {"High": 0.5, "Medium": 0.3, "Low": 0.2}, mass)
                 for _ in pairs]
    return make_rows("user", KEY, [(u, i, "observed") for u, i in pairs], judgments)[0]


def _table(store):
    return store.frame().drop(columns=["created_at"])


def test_shard_round_trip_and_name_follows_the_keys(tmp_path):
    rows = _rows([(0, 1), (0, 2)]) + _rows([(1, 3)], label=None, mass=None)
    path = write_shard(tmp_path, rows)
    assert read_shard(path) == rows  # floats, NULLs and strings as written
    assert write_shard(tmp_path / "b", list(rows)).name == path.name  # same keys, same name
    assert write_shard(tmp_path / "c", rows[:2]).name != path.name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError):
        write_shard(tmp_path, [])


def test_merge_is_idempotent_and_keeps_the_first_answer(tmp_path):
    run = tmp_path / "run"
    job = run / SHARDS_DIR / "j1"
    job.mkdir(parents=True)
    a = _rows([(0, 1), (0, 2)])
    b = _rows([(0, 2), (1, 3)], label=None, mass=0.01)  # (0, 2) again, another answer
    with JudgmentStore(run) as store:
        pa = write_shard(job, a)
        assert merge_shard(store, pa) == (2, 0)
        assert not pa.exists()  # deleted once committed
        before = _table(store)
        # the same shard merged again (driver killed between commit and delete): nothing added
        assert merge_shard(store, write_shard(job, a)) == (0, 0)
        assert _table(store).equals(before)
        # an overlapping shard adds only the new key; the stored answer for (0, 2) stays
        assert merge_shard(store, write_shard(job, b)) == (1, 1)
        df = _table(store)
        assert len(df) == 3
        assert df.loc[df["item"] == 2, "label"].tolist() == ["High"]
        assert store.counts() == (3, 1)


def test_merge_pending_takes_what_a_killed_job_left(tmp_path):
    run = tmp_path / "run"
    job = run / SHARDS_DIR / "old"
    job.mkdir(parents=True)
    write_shard(job, _rows([(0, 1)]))
    write_shard(job, _rows([(2, 1), (2, 4)], label=None))
    (job / ".abc.parquet.x.tmp").write_bytes(b"half a file")  # a write never finished
    (job / ".job").write_text("token")
    assert len(pending_shards(run)) == 2
    with JudgmentStore(run) as store, job_lock(run):
        assert merge_pending(store, run) == (3, 2, 2)
        assert store.counts() == (3, 2)
        assert merge_pending(store, run) == (0, 0, 0)
    assert pending_shards(run) == []
    assert not list(job.glob("*.tmp"))


def test_a_bad_shard_is_named_and_nothing_is_merged(tmp_path):
    run = tmp_path / "run"
    job = run / SHARDS_DIR / "j"
    job.mkdir(parents=True)
    bad = job / "0123.parquet"
    bad.write_bytes(b"not parquet")
    with JudgmentStore(run) as store:
        with pytest.raises(DataError, match="0123.parquet"):
            merge_shard(store, bad)
        assert store.counts() == (0, 0)
    assert bad.exists()  # kept for the user to look at


def test_one_job_per_run_folder(tmp_path):
    with job_lock(tmp_path):
        pid = os.fork()
        if pid == 0:  # another process must be refused while the lock is held
            try:
                with job_lock(tmp_path):
                    os._exit(1)
            except UserError as exc:
                os._exit(0 if "another rating job" in str(exc) else 2)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
    with job_lock(tmp_path):  # free again once released
        pass
