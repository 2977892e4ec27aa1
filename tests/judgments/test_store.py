"""The judgment store: keys, skipping, failures kept as failures, stats, export."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.engine.api import Judgment
from llmhni_local.judgments.store import JudgmentStore, Key

K = Key("model@abc", "", "p1")
P = {"High": 0.7, "Medium": 0.2, "Low": 0.1}


def test_add_missing_and_keys(tmp_path):
    s = JudgmentStore(tmp_path)
    bad = s.add("user", K, [(0, 1, "observed"), (0, 2, "unobserved")],
                [Judgment("High", "High", P, 0.9), Judgment("maybe?", None, P, 0.4)])
    assert bad == 1
    pairs = [(0, 1), (0, 2), (1, 1)]
    assert s.missing(pairs, "user", K) == [(1, 1)]
    assert s.missing(pairs, "item", K) == pairs  # other view
    assert s.missing(pairs, "user", Key("model@abc", "lora:x", "p1")) == pairs  # other adapter
    assert s.missing(pairs, "user", Key("model@abc", "", "p2")) == pairs  # other prompt
    assert s.missing(pairs, "user", Key("other", "", "p1")) == pairs  # other model
    assert s.counts(K) == (2, 1)
    s.close()


def test_failure_is_stored_raw_with_null_label(tmp_path):
    with JudgmentStore(tmp_path) as s:
        s.add("item", K, [(3, 4, "observed")], [Judgment("  Hi!", None, None, None)])
        df = s.frame()
    row = df.iloc[0]
    assert row["text"] == "  Hi!" and row["label"] is None and row["ok"] == 0
    assert pd.isna(row["p_high"]) and pd.isna(row["label_mass"])


def test_a_label_outside_the_set_is_refused(tmp_path):
    with JudgmentStore(tmp_path) as s:
        with pytest.raises(ValueError, match="not one of"):
            s.add("user", K, [(0, 0, None)], [Judgment("Great", "Great", None)])
        assert s.counts() == (0, 0)
        with pytest.raises(ValueError, match="pairs but"):
            s.add("user", K, [(0, 0, None)], [])


def test_batch_is_one_transaction(tmp_path):
    with JudgmentStore(tmp_path) as s:
        good = (0, 0, "user", "m", "", "h", "observed", "High", "High", 1.0, 0.0, 0.0, 1.0, 1,
                "now", None)
        broken = (0, 1, "user", "m", "", "h", "observed", "?", "Great", None, None, None, None,
                  0, "now", None)  # label CHECK constraint fails
        with pytest.raises(sqlite3.IntegrityError):
            s.add_rows([good, broken])
        assert s.counts() == (0, 0)  # the good row of the failed batch is not there either


def test_likelihood_scores_are_stored_and_a_missing_score_is_a_failure(tmp_path):
    with JudgmentStore(tmp_path) as s:
        s.add("user", K, [(0, 1, "observed"), (0, 2, "observed")],
              [Judgment("", None, None, decided_by="pmi", score=-0.75),
               Judgment("", None, None, decided_by="pmi", score=float("nan"))])
        f = s.frame(K)
    assert f["score"].tolist()[0] == -0.75 and f["ok"].tolist() == [1, 0]
    assert f["label"].isna().all()


def test_a_store_from_before_the_score_column_gains_it(tmp_path):
    import sqlite3 as sq

    from llmhni_local.judgments.store import _SCHEMA

    old = _SCHEMA.replace("    score       REAL,\n", "")
    conn = sq.connect(tmp_path / "judgments.sqlite")
    conn.executescript(old)
    conn.execute("INSERT INTO judgments (user, item, view, model_id, adapter, prompt_hash, kind, "
                 "text, label, ok, created_at) VALUES (0, 1, 'user', 'm', '', 'h', 'observed', "
                 "'High', 'High', 1, 'now')")
    conn.commit()
    conn.close()
    with JudgmentStore(tmp_path, create=False) as s:
        f = s.frame()
    assert f["label"].tolist() == ["High"] and f["score"].isna().all()


def test_wal_mode_and_reopen(tmp_path):
    with JudgmentStore(tmp_path) as s:
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        s.add("user", K, [(0, 1, "observed")], [Judgment("High", "High", P, 0.9)])
    with JudgmentStore(tmp_path, create=False) as s:
        assert s.counts() == (1, 0)
    with pytest.raises(UserError, match="run the `rate` stage"):
        JudgmentStore(tmp_path / "nothing", create=False)


def test_not_a_database(tmp_path):
    (tmp_path / "judgments.sqlite").write_text("hello, not sqlite" * 100)
    with pytest.raises(UserError, match="judgment store is damaged .file is not a database.; "
                                        "`llmhni judgments repair") as err:
        JudgmentStore(tmp_path)
    assert str(tmp_path / "judgments.sqlite") in str(err.value)


def test_stats(tmp_path):
    with JudgmentStore(tmp_path) as s:
        s.add("user", K, [(0, 1, "observed"), (0, 2, "unobserved"), (1, 2, "unobserved")],
              [Judgment("High", "High", P), Judgment("Low", "Low", P), Judgment("x", None, None)])
        s.add("item", Key("model@abc", "", "p9"), [(0, 1, "observed")],
              [Judgment("Medium", "Medium", P)])
        st = s.stats()
    assert st["rows"] == 4 and st["failures"] == 1 and st["failure_share"] == 0.25
    user = next(r for r in st["runs"] if r["view"] == "user")
    assert user["labels"] == {"High": 1, "Medium": 0, "Low": 1, "failed": 1}
    assert user["kinds"]["unobserved"] == {"High": 0, "Medium": 0, "Low": 1, "failed": 1}
    assert user["failure_share"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(tmp_path, fmt):
    out = tmp_path / f"j.{fmt}"
    with JudgmentStore(tmp_path) as s:
        s.add("user", K, [(0, 1, "observed"), (2, 3, "unobserved")],
              [Judgment("High", "High", P, 0.9), Judgment("?", None, None)])
        assert s.export(out, fmt) == 2
        with pytest.raises(UserError, match="csv or parquet"):
            s.export(tmp_path / "x.json", "json")
    df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert list(df["item"]) == [1, 3]
    assert df["p_high"].iloc[0] == pytest.approx(0.7)
    assert list(df["ok"]) == [1, 0]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file
