"""A damaged audit store (``RUN/audit/audit.sqlite``) is one line naming it and what to do."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from llmhni_local.audit import records
from llmhni_local.audit.records import AuditStore
from llmhni_local.core.errors import UserError


def labelled_run(tmp_path, n=3000):
    run = tmp_path / "run"
    rows = [{"user": u, "item": i, "label": ("High", "Medium", "Low")[(u + i) % 3],
             "annotator": "ann", "note": "a note to fill the pages " * 2}
            for u in range(n // 30) for i in range(30)]
    with AuditStore(run) as store:
        store.add_labels(rows, source_file="labels.csv", source_sha256="0" * 64)
    return run, store.path


def damage(db, page):
    with closing(sqlite3.connect(db)) as c:
        size = c.execute("PRAGMA page_size").fetchone()[0]
        assert c.execute("PRAGMA page_count").fetchone()[0] > page + 10
    with open(db, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\0" * size)


def test_a_damaged_audit_store_is_one_line_naming_it_and_the_way_back(tmp_path):
    run, db = labelled_run(tmp_path)
    damage(db, 20)
    with pytest.raises(UserError) as err:
        AuditStore(run, create=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{db}: the audit store is damaged (")
    assert f"`audit import {run} FILE`" in msg


def test_damage_met_when_reading_labels_through_pandas(tmp_path, monkeypatch):
    run, db = labelled_run(tmp_path)
    damage(db, 20)
    monkeypatch.setattr(records, "integrity_problem", lambda conn: None)
    with AuditStore(run, create=False) as store:
        with pytest.raises(UserError, match="the audit store is damaged"):
            store.labels()


def test_a_healthy_store_opens_as_before(tmp_path):
    run, _ = labelled_run(tmp_path, n=300)
    with AuditStore(run, create=False) as store:
        assert len(store.labels()) == 300
