"""A damaged judgment store is one line naming it; ``judgments repair`` salvages it.

The store is made by rating 3,000 candidate pairs in both views with a fake rater
(``tests/helpers/rating_fixture.py``): 6,000 rows on about 280 pages. Damage is a few pages in the
middle of the file overwritten with zeros, as a lost or torn write leaves them.
"""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.judgments import store as store_mod
from llmhni_local.judgments.repair import repair_store
from llmhni_local.judgments.store import VIEWS, JudgmentStore, Key

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("rating_fixture",
                                               Path(__file__).resolve().parents[1] / "helpers" / "rating_fixture.py")
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)

N_ROWS = 6000
PAGES = (100, 101, 140)  # 1-based page numbers, well past the schema and the table's root


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    run = rf.make_run(tmp_path_factory.mktemp("rated") / "run")
    rep = rf.rate(run)
    assert rep.rated == N_ROWS
    return run


def copy_run(rated: Path, to: Path) -> Path:
    shutil.copytree(rated, to)
    return to


def damage(db: Path, pages=PAGES) -> None:
    with closing(sqlite3.connect(db)) as c:
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        assert c.execute("PRAGMA page_count").fetchone()[0] > 2 * max(pages)  # the middle
    assert not db.with_name(db.name + "-wal").exists()  # everything is in the main file
    with open(db, "r+b") as f:
        for p in leaf_pages(f, page_size, pages):
            f.seek((p - 1) * page_size)
            f.write(b"\0" * page_size)


def leaf_pages(f, page_size: int, pages) -> list[int]:
    """From each page given, the first leaf page of the (WITHOUT ROWID, so index) b-tree at or
    after it: a torn leaf loses its own rows, while an interior page would hide a whole subtree,
    and which page is which shifts whenever the row layout changes."""
    out = []
    for p in pages:
        while True:
            f.seek((p - 1) * page_size)
            if f.read(1) == b"\x0a" and p not in out:  # 0x0A: leaf page of an index b-tree
                break
            p += 1
        out.append(p)
    return out


def rows_by_key(run: Path) -> dict[tuple, tuple]:
    with JudgmentStore(run, create=False) as s:
        df = s.frame().drop(columns=["created_at"])
    return {tuple(r[:6]): tuple(r) for r in df.itertuples(index=False)}


def quick_check(db: Path) -> str:
    with closing(sqlite3.connect(db)) as c:
        try:
            return c.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            return str(exc)


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_opening_a_damaged_store_is_one_line_naming_it_and_the_way_out(rated, tmp_path):
    run = copy_run(rated, tmp_path / "run")
    damage(run / "judgments.sqlite")
    with pytest.raises(UserError) as err:
        JudgmentStore(run, create=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{run / 'judgments.sqlite'}: the judgment store is damaged (")
    assert f"`llmhni judgments repair {run}`" in msg
    for args in (("judgments", "stats", run), ("verdicts", "decide", run)):  # as a user meets it
        r = cli(*args)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "judgment store is damaged" in lines[0] and "Traceback" not in r.stderr


def test_damage_met_after_opening_is_the_same_one_line(rated, tmp_path, monkeypatch):
    # pandas wraps sqlite3's error in its own DatabaseError (the verdicts stage reads the store
    # through pandas); skipping the check on opening makes the read meet the damage.
    run = copy_run(rated, tmp_path / "run")
    damage(run / "judgments.sqlite")
    monkeypatch.setattr(store_mod, "integrity_problem", lambda conn: None)
    with JudgmentStore(run, create=False) as s:
        with pytest.raises(UserError, match="judgment store is damaged .*judgments repair"):
            s.frame()
        with pytest.raises(UserError, match="judgment store is damaged"):
            s.counts()


def test_repair_keeps_every_readable_row_and_counts_the_lost_exactly(rated, tmp_path):
    original = rows_by_key(rated)
    run = copy_run(rated, tmp_path / "run")
    db = run / "judgments.sqlite"
    damage(db)
    damaged_bytes = db.read_bytes()

    r = repair_store(run)
    assert r.problem and r.recorded == N_ROWS
    assert r.kept + r.lost == N_ROWS and r.lost > 0
    assert r.kept >= N_ROWS - 100 * len(PAGES)  # about one page's rows lost per page
    # the damaged file is kept as it was, beside the fresh store
    assert r.damaged.parent == run and r.damaged.name.startswith("judgments.sqlite.damaged-")
    assert r.damaged.read_bytes() == damaged_bytes and quick_check(r.damaged) != "ok"
    assert quick_check(db) == "ok"
    assert not list(run.glob(".*.tmp")) and not (run / "judgments.sqlite-wal").exists()
    # every kept row is the original row; the rest are what rating would find missing
    kept = rows_by_key(run)
    assert len(kept) == r.kept and all(original[k] == v for k, v in kept.items())
    with JudgmentStore(run, create=False) as s:
        missing = 0
        for view in VIEWS:
            (prompt_hash,) = {k[5] for k in original if k[2] == view}
            pairs = [(k[0], k[1]) for k in original if k[2] == view]
            missing += len(s.missing(pairs, view, Key(rf.MODEL_ID, "", prompt_hash)))
    assert missing == r.lost
    # `run` must see the rating stage unfinished: its manifest is set aside
    assert not (run / "rating.json").exists() and r.rating_manifest.is_file()


def test_rating_again_rates_only_the_lost_rows(rated, tmp_path):
    original = rows_by_key(rated)
    run = copy_run(rated, tmp_path / "run")
    damage(run / "judgments.sqlite")
    r = repair_store(run)
    rep = rf.rate(run)
    assert rep.rated == r.lost and rep.skipped == r.kept
    assert rows_by_key(run) == original


def test_repair_of_a_healthy_store_changes_nothing(rated, tmp_path):
    run = copy_run(rated, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = repair_store(run)
    assert r.healthy and r.kept == N_ROWS and r.lost == 0 and r.damaged is None
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_repair_command(rated, tmp_path):
    run = copy_run(rated, tmp_path / "run")
    damage(run / "judgments.sqlite")
    r = cli("judgments", "repair", run)
    assert r.returncode == 0, r.stderr
    assert f"{run / 'judgments.sqlite'} was damaged (" in r.stdout
    assert f"lost of {N_ROWS}; the damaged file is kept as " in r.stdout
    assert "only the rows lost are rated" in r.stdout
    r = cli("judgments", "repair", run)
    assert r.returncode == 0 and "is healthy" in r.stdout and "nothing changed" in r.stdout
    assert len(list(run.glob("judgments.sqlite.damaged-*"))) == 1
    assert not (run / ".lock").exists()


def test_a_file_that_is_not_a_store_is_replaced_by_an_empty_one(tmp_path):
    (tmp_path / "judgments.sqlite").write_bytes(b"not sqlite at all " * 1000)
    r = repair_store(tmp_path)
    assert r.kept == 0 and r.lost is None and r.damaged.is_file()
    with JudgmentStore(tmp_path, create=False) as s:
        assert s.counts() == (0, 0)


def test_row_count_follows_inserts_replaces_and_deletes(tmp_path):
    from llmhni_local.engine.api import Judgment

    k = Key("m", "", "h")
    with JudgmentStore(tmp_path) as s:
        s.add("user", k, [(0, i, None) for i in range(10)], [Judgment("High", "High", None)] * 10)
        s.add("user", k, [(0, i, None) for i in range(5, 15)], [Judgment("Low", "Low", None)] * 10)
        with s.conn:
            s.conn.execute("DELETE FROM judgments WHERE item < 3")
        n = s.conn.execute("SELECT n FROM row_count").fetchone()[0]
        assert n == s.counts()[0] == 12


def test_a_store_from_before_row_count_is_counted_when_opened(tmp_path):
    db = tmp_path / "judgments.sqlite"
    with closing(sqlite3.connect(db)) as c:
        c.executescript(store_mod._SCHEMA)
        c.executemany("INSERT INTO judgments (user, item, view, model_id, prompt_hash, text, ok, "
                      "created_at) VALUES (?, ?, 'user', 'm', 'h', 'High', 1, 'now')",
                      [(0, i) for i in range(7)])
        c.commit()
    with JudgmentStore(tmp_path, create=False) as s:
        assert s.conn.execute("SELECT n FROM row_count").fetchone()[0] == 7
