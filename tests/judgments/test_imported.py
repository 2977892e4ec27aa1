"""Judgments made elsewhere, imported from a file (``judgments import``, ``rate.file``)."""

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from llmhni_local.core.config import DataSettings, to_dict
from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.judgments.imported import import_judgments
from llmhni_local.judgments.plan import RateSettings, read_rating_manifest
from llmhni_local.judgments.store import VIEWS, JudgmentStore, Key, imported_key
from llmhni_local.llmhni.denoise import denoised_edges
from llmhni_local.stages.key import stage_key
from llmhni_local.stages.methods import verdict_table
from llmhni_local.verdicts.decide import Audits, write_verdicts
from llmhni_local.verdicts.rules import VerdictSettings

ROOT = Path(__file__).resolve().parents[2]
USERS = ["007", "7", "u3", "u4"]  # "007" and "7" are two users
ITEMS = ["i0", "i1", "i2", "i3", "i4", "i5"]
COLUMNS = ("user", "item", "view", "label")


def data() -> Interactions:
    """007: i0 i1 i2; 7: i1 i3; u3: i4; u4: i0 i5."""
    train = np.array([[0, 0], [0, 1], [0, 2], [1, 1], [1, 3], [2, 4], [3, 0], [3, 5]])
    return Interactions(name="tiny", n_users=4, n_items=6, train=train,
                        val=np.array([[0, 3]]), test=np.array([[1, 0]]),
                        user_ids=list(USERS), item_ids=list(ITEMS))


#: (007, i0) observed, High / Low: noisy, removed; (7, i1) observed, High / High: kept;
#: (007, i4) unobserved, High / high: added; (7, i5) unobserved, High / Medium: nothing;
#: (u4, i1) judged in the user view only: no verdict, not added. No pair is a candidate.
GOOD = [("007", "i0", "user", "High"), ("007", "i0", "item", "Low"),
        ("7", "i1", "user", "High"), ("7", "i1", "Item", "HIGH"),
        ("007", "i4", "user", "High"), ("007", "i4", "item", "high"),
        ("7", "i5", "user", "High"), ("7", "i5", "item", "Medium"),
        ("u4", "i1", "user", "High")]


def write(path: Path, rows, columns=COLUMNS) -> Path:
    frame = pd.DataFrame([dict(zip(columns, r)) for r in rows], columns=list(columns))
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":  # an id given as a JSON number is its decimal text
        path.write_text("".join(json.dumps({c: (int(v) if c == "user" and v == "7" else v)
                                            for c, v in r.items()}) + "\n"
                                for r in frame.to_dict("records")))
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path


def gprime(run_dir: Path, d: Interactions) -> set[tuple[int, int]]:
    """G' as the train stage builds it from RUN/verdicts.parquet."""
    edges, _ = denoised_edges(d.train, verdict_table(SimpleNamespace(dir=run_dir)))
    return set(map(tuple, edges.tolist()))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_a_good_file_is_stored_under_its_source_and_decides_gprime(tmp_path, suffix):
    d, run = data(), tmp_path / "run"
    path = write(tmp_path / f"j{suffix}", GOOD)
    m = import_judgments(run, path, source="lab", data=d)
    assert m["sha256"] == sha(path) and m["model_id"] == "import:lab" and m["judgments"] == 9
    assert (m["both_views"], m["user_view_only"], m["item_view_only"]) == (4, 1, 0)
    assert json.loads((run / "ratings" / "lab.json").read_text())["sha256"] == sha(path)
    assert not (run / "rating.json").exists()  # the last rating run stays the default
    with JudgmentStore(run, create=False) as store:
        rows = store.frame(imported_key("lab"))
    assert len(rows) == 9 and set(rows["label"]) == {"High", "Medium", "Low"}
    assert rows.loc[(rows["user"] == 0) & (rows["item"] == 4), "kind"].tolist() == \
        ["unobserved"] * 2

    counts = write_verdicts(run, audits=Audits.empty(), source="lab", data=d)
    assert counts["actions"] == {"keep": 1, "remove": 1, "add": 1, "nothing": 1}
    assert counts["held_out"] == {"validation": 0, "test": 0, "kept_as_adds": False}
    assert counts["unobserved"]["unrated"] == 1 and counts["no_verdict"] == 1
    j = counts["judgments"]
    assert j["source"] == "lab" and j["sha256"] == sha(path) and j["user_view_only"] == 1
    assert j["not_candidates_of_run"] == 5  # decided all the same: nothing dropped
    g = gprime(run, d)
    assert (0, 0) not in g and (0, 4) in g  # removed; added ("007" is user 0, not "7")
    assert (1, 1) in g and (1, 5) not in g and (3, 1) not in g


BAD = {
    "unknown user": ([("007", "i0", "user", "High"), ("07", "i1", "user", "High")], None,
                     "row 2, column user: unknown user id '07' (not among the data's 4"),
    "unknown item": ([("7", "i9", "user", "High")], None,
                     "row 1, column item: unknown item id 'i9'"),
    "unknown view": ([("7", "i1", "both", "High")], None,
                     "row 1, column view: unknown view 'both' (user or item, any case)"),
    "unknown label": ([("7", "i1", "user", "Maybe")], None,
                      "row 1, column label: unknown label 'Maybe' (High, Medium or Low"),
    "missing column": ([("7", "i1", "High")], ("user", "item", "label"),
                       ": missing column 'view' (found: user, item, label)"),
    "no label or score column": ([("7", "i1", "user")], ("user", "item", "view"),
                                 ": missing column 'label' or 'score' (found: user, item, view)"),
    "neither label nor score": ([("7", "i1", "user", "High", ""), ("7", "i1", "item", "", "")],
                                ("user", "item", "view", "label", "score"),
                                "row 2, columns label and score: neither has a value"),
    "a label missing where others give one": (
        [("7", "i1", "user", "High", "0.5"), ("7", "i1", "item", "", "0.2")],
        ("user", "item", "view", "label", "score"),
        "row 2, column label: empty value '' (row 1 gives a label"),
    "non-numeric score": ([("7", "i1", "user", "abc")], ("user", "item", "view", "score"),
                          "row 1, column score: 'abc' is not a number"),
    "conflicting duplicate": ([("7", "i1", "user", "High"), ("007", "i0", "user", "Low"),
                               ("7", "i1", "User", "low")], None,
                              "row 3, column label: 'low' conflicts with row 1's 'High' for "
                              "user '7', item 'i1', view 'user'"),
    "empty view": ([("7", "i1", "", "High")], None, "row 1, column view: empty value ''"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_row_is_one_line_and_the_store_stays_byte_identical(tmp_path, case):
    run, d = tmp_path / "run", data()
    import_judgments(run, write(tmp_path / "good.csv", GOOD), source="lab", data=d)
    before = {p.name: sha(p) for p in sorted(run.rglob("*")) if p.is_file()}
    rows, columns, needle = BAD[case]
    path = write(tmp_path / "bad.csv", rows, columns or COLUMNS)
    with pytest.raises(UserError) as err:
        import_judgments(run, path, source="lab", data=d)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and needle in msg, msg
    after = {p.name: sha(p) for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before and "judgments.sqlite" in after


def test_skip_unknown_drops_and_counts_by_reason_and_repeats_collapse(tmp_path):
    path = write(tmp_path / "j.csv", [("007", "i0", "user", "Low"), ("x", "i1", "user", "High"),
                                      ("y", "i9", "item", "High"), ("7", "i9", "user", "Low"),
                                      ("007", "i0", "USER", " low ")])
    m = import_judgments(tmp_path / "run", path, source="lab", data=data(), skip_unknown=True)
    assert m["dropped_unknown"] == {"unknown_user": 2, "unknown_item": 1}
    assert m["judgments"] == 1 and m["duplicates_collapsed"] == 1
    with pytest.raises(UserError, match="unknown user id 'x'"):
        import_judgments(tmp_path / "run", path, source="lab", data=data())


def test_scores_feed_the_threshold_rule_and_a_rule_without_input_is_refused(tmp_path):
    d, run = data(), tmp_path / "run"
    rows = [(u, i, v, s) for (u, i, v, _), s in zip(GOOD[:8], (3, -1, 2, 2, 4, 5, 1, -2))]
    import_judgments(run, write(tmp_path / "s.parquet", rows, ("user", "item", "view", "score")),
                     source="reader", data=d)
    with pytest.raises(UserError, match="scores without labels; verdicts.rule = 'argmax'"):
        write_verdicts(run, audits=Audits.empty(), source="reader", data=d)
    rule = VerdictSettings(rule="threshold", tau_source="share", target_share=0.5)
    counts = write_verdicts(run, rule, audits=Audits.empty(), source="reader", data=d)
    # half of each view says High: user scores 3 and 4, item scores 2 and 5; both only (007, i4)
    table = pd.read_parquet(run / "verdicts.parquet").set_index(["user", "item"])
    assert table["verdict"].to_dict() == {(0, 0): "noisy", (0, 4): "hard", (1, 1): "noisy",
                                          (1, 5): "noisy"}
    assert counts["judgments"]["mode"] == "likelihood"
    import_judgments(run, write(tmp_path / "l.csv", GOOD), source="lab", data=d)
    with pytest.raises(UserError, match="no label probabilities; verdicts.rule = 'stacked'"):
        write_verdicts(run, VerdictSettings(rule="stacked"), audits=Audits.empty(),
                       source="lab", data=d)
    with pytest.raises(UserError, match="no judgments imported under source 'other'"):
        write_verdicts(run, audits=Audits.empty(), source="other", data=d)


def test_held_out_pairs_judged_hard_are_not_added_unless_asked(tmp_path):
    """A file from elsewhere that judges a validation or a test pair hard would put a
    held-out answer into G': counted and held back, as for an imported verdicts file."""
    d, run = data(), tmp_path / "run"
    rows = GOOD + [("007", "i3", "user", "High"), ("007", "i3", "item", "High"),  # validation
                   ("7", "i0", "user", "High"), ("7", "i0", "item", "High")]  # test
    import_judgments(run, write(tmp_path / "j.csv", rows), source="lab", data=d)
    counts = write_verdicts(run, audits=Audits.empty(), source="lab", data=d)
    assert counts["held_out"] == {"validation": 1, "test": 1, "kept_as_adds": False}
    assert counts["actions"]["add"] == 1
    table = pd.read_parquet(run / "verdicts.parquet").set_index(["user", "item"])
    assert table.loc[(0, 3), "reason"] == "held_out" and table.loc[(1, 0), "held_out"] == "test"
    g = gprime(run, d)
    assert (0, 3) not in g and (1, 0) not in g and (0, 4) in g
    kept = write_verdicts(run, VerdictSettings(keep_held_out=True), audits=Audits.empty(),
                          source="lab", data=d)
    assert kept["held_out"] == {"validation": 1, "test": 1, "kept_as_adds": True}
    assert kept["actions"]["add"] == 3 and {(0, 3), (1, 0)} <= gprime(run, d)


# ---------------------------------------------------------------------------- round trip
def with_ids(d: Interactions) -> Interactions:
    return dataclasses.replace(d, user_ids=[f"U{u:03d}" for u in range(d.n_users)],
                               item_ids=[f"{1000 + i}" for i in range(d.n_items)])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_with_raw_ids_then_import_decides_the_same_verdicts(rated_run, synth_data, fmt):
    d = with_ids(synth_data())
    original = write_verdicts(rated_run, audits=Audits.empty())
    before = pd.read_parquet(rated_run / "verdicts.parquet")
    m = read_rating_manifest(rated_run)
    views = {v: Key(m["model_id"], m["adapter"], m["views"][v]["prompt_hash"]) for v in VIEWS}
    out = rated_run / f"export.{fmt}"
    with JudgmentStore(rated_run, create=False) as store:
        n = store.export(out, fmt, views=views, raw_ids=(d.user_ids, d.item_ids))
    frame = pd.read_csv(out, dtype=str) if fmt == "csv" else pd.read_parquet(out)
    assert frame["user"].str.startswith("U").all() and "user_index" in frame
    assert (frame["ok"].astype(int) == 0).any()  # failed answers travel too

    got = import_judgments(rated_run, out, source="again", data=d)
    assert got["judgments"] == n and got["failures"] == int((frame["ok"].astype(int) == 0).sum())
    # held-out adds kept, so the import is the same rating read back
    counts = write_verdicts(rated_run, VerdictSettings(keep_held_out=True),
                            audits=Audits.empty(), source="again", data=d)
    after = pd.read_parquet(rated_run / "verdicts.parquet")
    cols = ["user", "item", "kind", "verdict", "action"]
    key = ["user", "item"]
    pd.testing.assert_frame_equal(before[cols].sort_values(key).reset_index(drop=True),
                                  after[cols].sort_values(key).reset_index(drop=True))
    assert counts["actions"] == original["actions"] and counts["no_verdict"] > 0
    assert counts["judgments"]["not_candidates_of_run"] == 0


# ---------------------------------------------------------------------------- settings
def test_the_setting_is_checked_and_keeps_finished_run_keys(tmp_path):
    with pytest.raises(ConfigError, match="rate.file: .*none.csv: no such file"):
        RateSettings(file=str(tmp_path / "none.csv"), source="lab")
    path = write(tmp_path / "j.csv", GOOD)
    with pytest.raises(ConfigError, match="rate.source .*use letters, digits"):
        RateSettings(file=str(path), source="a lab/b")
    with pytest.raises(ConfigError, match="rate.source .*the source name is empty"):
        RateSettings(file=str(path))
    with pytest.raises(ConfigError, match="set rate.file too"):
        RateSettings(source="lab")
    old = {k: v for k, v in to_dict(RateSettings()).items()
           if k not in ("file", "source", "skip_unknown")}
    assert stage_key("rate", {"rate": to_dict(RateSettings())}, {"candidates": "c"}) == \
        stage_key("rate", {"rate": old}, {"candidates": "c"})


# ---------------------------------------------------------------------------- the commands
def test_audit_export_names_raw_ids_and_samples_an_imported_rating(tmp_path, profiled_run):
    from llmhni_local.audit.export import export_sample

    run, d = profiled_run
    rows = [(d.user_ids[u], d.item_ids[i], v, "High") for u, i in d.train[:5] for v in VIEWS]
    import_judgments(run, write(tmp_path / "j.csv", rows), source="lab", data=d,
                     as_last_rating=True)  # as the pipeline's rate stage does
    frame, info = export_sample(run, 5)  # no candidates.parquet: the imported pairs
    assert len(frame) == 5 and info["model_id"] == "import:lab"
    assert frame["user_id"].tolist() == [d.user_ids[u] for u in frame["user"]]
    assert frame["item_id"].tolist() == [d.item_ids[i] for i in frame["item"]]


def test_cli_imports_decides_exports_and_refuses_a_bad_file_in_one_line(tmp_path,
                                                                        profiled_run):
    from typer.testing import CliRunner

    from llmhni_local.cli import app

    run, d = profiled_run
    (u0, i0), (u1, i1) = d.train[0], d.train[1]
    good = write(tmp_path / "j.csv", [(d.user_ids[u0], d.item_ids[i0], v, lab) for v, lab in
                                      (("user", "High"), ("item", "Low"))]
                 + [(d.user_ids[u1], d.item_ids[i1], v, "High") for v in VIEWS])
    res = CliRunner().invoke(app, ["judgments", "import", str(run), str(good), "--source", "lab"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "4 judgments of 2 pairs from 4 rows" in res.output
    res = CliRunner().invoke(app, ["verdicts", "decide", str(run), "--source", "lab"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "observed keep 1, remove 1" in res.output and "from source lab" in res.output
    out = tmp_path / "back.csv"
    res = CliRunner().invoke(app, ["judgments", "export", str(run), "--source", "lab",
                                   "--raw-ids", "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert set(pd.read_csv(out, dtype=str)["user"]) == {d.user_ids[u0], d.user_ids[u1]}

    bad = write(tmp_path / "bad.csv", [(d.user_ids[0], d.item_ids[0], "user", "High"),
                                       (d.user_ids[1], d.item_ids[1], "user", "Great")])
    store = run / "judgments.sqlite"
    before = sha(store)
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "judgments", "import", str(run),
                        str(bad), "--source", "lab"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0] == f"error: {bad} row 2, column label: unknown label 'Great' (High, " \
                       "Medium or Low, any case)"
    assert sha(store) == before


def test_pipeline_imports_the_judgments_and_decides_from_them(tmp_path, files_data):
    pytest.importorskip("sentence_transformers")
    from llmhni_local.data import load_data
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.context import Run
    from llmhni_local.stages.settings import load_run_config
    from llmhni_local.stages.verdicts import stale

    source = files_data(tmp_path / "data")
    d = load_data(DataSettings(source=source))
    train = set(map(tuple, d.train.tolist()))
    held = set(map(tuple, np.concatenate([d.val, d.test]).tolist()))
    removed = [tuple(p) for p in d.train[:3].tolist()]
    added = [(0, j) for j in range(d.n_items) if (0, j) not in train | held][:2]
    rows = [(d.user_ids[u], d.item_ids[i], v, lab) for u, i in removed
            for v, lab in (("user", "High"), ("item", "Low"))]
    rows += [(d.user_ids[u], d.item_ids[i], v, "High") for u, i in added for v in VIEWS]
    j1 = write(tmp_path / "j1.csv", rows)
    settings = {"data.source": source, "embedder.backend": "sentence-transformers",
                "train.epochs": 2, "train.eval_every": 1, "train.min_epochs": 1,
                "train.patience": 1, "model.dim": 8, "llmhni.align.epochs": 2,
                "tune.kind": "none", "candidates.budget": 20, "pipeline.methods": ["bpr-gprime"],
                "pipeline.out": str(tmp_path / "run"), "verdicts.rule": "argmax",
                # no rater model: a name the registry cannot resolve would stop a rating run
                "rater.model": "no-such-model"}
    cfg = load_run_config("configs/ml100k.toml", {**settings, "rate.file": str(j1),
                                                  "rate.source": "lab"})
    run = run_pipeline(cfg, progress=False, log=lambda _: None)
    folder = run.dir
    assert read_rating_manifest(folder)["source"] == "lab"
    denoise = json.loads((folder / "train" / "bpr-gprime" / "seed0" / "manifest.json")
                         .read_text())["denoise"]
    assert denoise["removed"] == 3 and denoise["added"] == 2
    g = gprime(folder, d)
    assert not set(removed) & g and set(added) <= g
    counts = json.loads((folder / "verdicts.json").read_text())
    assert counts["judgments"]["sha256"] == sha(j1)
    results = json.loads((folder / "results.json").read_text())
    assert results["rater"]["kind"] == "imported_judgments"
    assert "Verdicts of bpr-gprime: judgments imported from lab (j1.csv, sha256 " \
           f"{sha(j1)[:12]}), decided here by the argmax rule" in (folder / "report.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"]["rater"]["imported_judgments"] is True

    # the rate key holds the file's sha256; the source imported again by hand is noticed
    again = Run(cfg, progress=False, log=lambda _: None)
    again.keys["data"] = again.key("data")
    assert again.key("rate") == json.loads((folder / "stages" / "rate.json").read_text())["key"]
    assert stale(again) == []
    import_judgments(folder, write(tmp_path / "j2.csv", rows[:2]), source="lab", data=d)
    assert stale(again) == ["verdicts.parquet"]
    j1.write_text(j1.read_text().replace("Low", "High", 1))
    assert again.key("rate") != json.loads((folder / "stages" / "rate.json").read_text())["key"]
    both = load_run_config("configs/ml100k.toml", {
        **settings, "rate.file": str(j1), "rate.source": "lab", "verdicts.file": str(j1),
        "verdicts.source": "lab"})
    with pytest.raises(ConfigError, match=r"rate.file \(.*j1.csv\) brings the judgments and "
                                          r"verdicts.file"):
        run_pipeline(both, progress=False, log=lambda _: None)
