"""``audit import``: every kind of bad row refuses the whole file and stores nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from llmhni_local.audit.importer import ImportRefused, import_labels
from llmhni_local.audit.records import AUDIT_DB, AuditStore, audit_dir

GOOD = [
    {"user": 0, "item": 1, "label": "High", "annotator": "ana", "labelled_at": "2026-01-02"},
    {"user": 0, "item": 2, "label": "medium", "annotator": "ana", "labelled_at": "2026-01-02"},
    {"user": 3, "item": 5, "label": " Low ", "annotator": "", "labelled_at": ""},
]


def _stored(run: Path) -> int:
    db = audit_dir(run) / AUDIT_DB
    if not db.is_file():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_valid_file_is_stored_with_who_and_when(rated_run, write_labels, tmp_path, suffix):
    path = write_labels(tmp_path / f"labels{suffix}", GOOD)
    result = import_labels(rated_run, path)
    assert result.rows == 3 and result.replaced == 0 and not result.simulated
    assert result.labels == {"High": 1, "Medium": 1, "Low": 1}
    with AuditStore(rated_run) as store:
        df = store.labels()
        imports = store.imports()
    assert df[["user", "item", "label"]].values.tolist() == [[0, 1, "High"], [0, 2, "Medium"],
                                                            [3, 5, "Low"]]
    assert df["annotator"].tolist() == ["ana", "ana", ""]
    assert df["labelled_at"].tolist() == ["2026-01-02", "2026-01-02", ""]
    assert len(imports) == 1 and imports[0]["rows"] == 3 and len(imports[0]["sha256"]) == 64
    # importing a relabelled pair replaces it, and says so
    again = write_labels(tmp_path / f"again{suffix}", [{"user": 0, "item": 1, "label": "Low"}])
    assert import_labels(rated_run, again).replaced == 1
    with AuditStore(rated_run) as store:
        df = store.labels()
    assert len(df) == 3 and df.set_index(["user", "item"]).loc[(0, 1), "label"] == "Low"


BAD_CASES = {
    "unknown user": ({"user": 999, "item": 1, "label": "High"}, "unknown user '999'"),
    "user not a number": ({"user": "bob", "item": 1, "label": "High"}, "unknown user 'bob'"),
    "unknown item": ({"user": 1, "item": 24, "label": "High"}, "unknown item '24'"),
    "negative item": ({"user": 1, "item": -1, "label": "High"}, "unknown item '-1'"),
    "label outside": ({"user": 1, "item": 1, "label": "Very high"},
                      "label 'Very high' is not one of High, Medium, Low"),
    "blank label": ({"user": 1, "item": 1, "label": ""}, "blank label"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_each_kind_of_bad_row_refuses_the_file(rated_run, write_labels, tmp_path, case, suffix):
    bad, message = BAD_CASES[case]
    path = write_labels(tmp_path / f"labels{suffix}", GOOD + [bad])
    with pytest.raises(ImportRefused) as info:
        import_labels(rated_run, path)
    exc = info.value
    assert "1 bad row (of 4); nothing was imported" in str(exc) and "\n" not in str(exc)
    line = 5 if suffix == ".csv" else 4  # CSV: header on line 1
    assert exc.problems == [f"line {line}: {message}" + exc.problems[0].split(message, 1)[1]]
    assert message in exc.problems[0]
    assert _stored(rated_run) == 0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_duplicate_pairs_are_listed_with_every_occurrence(rated_run, write_labels, tmp_path,
                                                          suffix):
    rows = GOOD + [{"user": 0, "item": 1, "label": "High"}]  # same pair as the first row
    path = write_labels(tmp_path / f"labels{suffix}", rows)
    with pytest.raises(ImportRefused) as info:
        import_labels(rated_run, path)
    first, dup = (2, 5) if suffix == ".csv" else (1, 4)
    assert info.value.problems == [
        f"line {first}: duplicate pair (user 0, item 1), also on line {dup}",
        f"line {dup}: duplicate pair (user 0, item 1), also on line {first}"]
    assert _stored(rated_run) == 0


def test_missing_column_refuses_the_file(rated_run, write_labels, tmp_path):
    path = write_labels(tmp_path / "labels.csv", [{"user": 0, "item": 1}], columns=["user", "item"])
    with pytest.raises(ImportRefused, match="missing column label") as info:
        import_labels(rated_run, path)
    assert info.value.problems == ["column 'label' is missing (required: user, item, label)"]
    jsonl = write_labels(tmp_path / "labels.jsonl", [{"user": 0, "label": "High"}])
    with pytest.raises(ImportRefused, match="missing column item"):
        import_labels(rated_run, jsonl)
    assert _stored(rated_run) == 0


def test_a_row_missing_a_value_is_bad(rated_run, write_labels, tmp_path):
    # JSON Lines: one row lacks its label; CSV: one row is cut short
    jsonl = write_labels(tmp_path / "labels.jsonl", GOOD + [{"user": 2, "item": 2}])
    with pytest.raises(ImportRefused) as info:
        import_labels(rated_run, jsonl)
    assert info.value.problems == ["line 4: no label value"]
    csv = tmp_path / "short.csv"
    csv.write_text("user,item,label\n0,1,High\n2,3\n")
    with pytest.raises(ImportRefused) as info:
        import_labels(rated_run, csv)
    assert info.value.problems == ["line 3: no label value"]
    assert _stored(rated_run) == 0


def test_many_bad_rows_are_all_listed_in_line_order(rated_run, write_labels, tmp_path):
    rows = [{"user": 0, "item": 1, "label": "High"},
            {"user": 50, "item": 99, "label": "Great"},  # three problems on one row
            {"user": 0, "item": 2, "label": "Low"},
            {"user": 0, "item": 1, "label": "Low"},
            {"user": 1, "item": 1, "label": ""}]
    path = write_labels(tmp_path / "labels.csv", rows)
    with pytest.raises(ImportRefused, match="4 bad rows") as info:
        import_labels(rated_run, path)
    p = info.value.problems
    assert [x.split(":")[0] for x in p] == ["line 2", "line 3", "line 5", "line 6"]
    assert "unknown user '50'" in p[1] and "unknown item '99'" in p[1] and "'Great'" in p[1]
    assert _stored(rated_run) == 0


def test_unreadable_files_are_refused(rated_run, tmp_path):
    bad_json = tmp_path / "labels.jsonl"
    bad_json.write_text('{"user": 0, "item": 1, "label": "High"}\nnot json\n')
    with pytest.raises(ImportRefused) as info:
        import_labels(rated_run, bad_json)
    assert info.value.problems[0].startswith("line 2: not valid JSON")
    xlsx = tmp_path / "labels.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(Exception, match="unknown label file type"):
        import_labels(rated_run, xlsx)
    with pytest.raises(Exception, match="label file not found"):
        import_labels(rated_run, tmp_path / "nowhere.csv")
    assert _stored(rated_run) == 0
