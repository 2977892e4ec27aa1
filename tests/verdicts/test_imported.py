"""Verdicts made elsewhere, imported from a file (``verdicts import``, ``verdicts.file``)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from llmhni_local.core.config import DataSettings
from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.llmhni.denoise import denoised_edges
from llmhni_local.stages.key import stage_key
from llmhni_local.stages.methods import verdict_table
from llmhni_local.verdicts.imported import import_verdicts
from llmhni_local.verdicts.rules import VerdictSettings

ROOT = Path(__file__).resolve().parents[2]
USERS = ["007", "7", "u3", "u4"]  # "007" and "7" are two users
ITEMS = ["i0", "i1", "i2", "i3", "i4", "i5"]


def data() -> Interactions:
    """007: i0 i1 i2; 7: i1 i3; u3: i4 (one edge); u4: i0 i5. Held out: (007, i3) in
    validation, (7, i0) in test."""
    train = np.array([[0, 0], [0, 1], [0, 2], [1, 1], [1, 3], [2, 4], [3, 0], [3, 5]])
    return Interactions(name="tiny", n_users=4, n_items=6, train=train,
                        val=np.array([[0, 3]]), test=np.array([[1, 0]]),
                        user_ids=list(USERS), item_ids=list(ITEMS))


#: remove (007, i0); keep (7, i1); add (007, i4); nothing for (7, i5); (7, i2) is 7's, not 007's
GOOD = [("007", "i0", "noisy"), ("7", "i1", "Hard"), ("007", "i4", "HARD"), ("7", "i5", "noisy"),
        ("7", "i2", "hard")]


def write(path: Path, rows, columns=("user", "item", "verdict")) -> Path:
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


def folder_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "verdicts.json").write_text('{"earlier": true}\n')  # what a refusal must not touch
    return run


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_a_good_file_imports_and_gprime_changes_as_it_says(tmp_path, run_dir, suffix):
    d = data()
    counts = import_verdicts(run_dir, write(tmp_path / f"v{suffix}", GOOD), source="lab",
                             data=d)
    assert counts["imported"] is True and counts["source"] == "lab" and counts["pairs"] == 5
    assert counts["actions"] == {"keep": 1, "remove": 1, "add": 2, "nothing": 1, "none": 0}
    assert counts["sha256"] == hashlib.sha256((tmp_path / f"v{suffix}").read_bytes()).hexdigest()
    g = gprime(run_dir, d)
    assert (0, 0) not in g  # removed
    assert (0, 4) in g and (1, 2) in g  # added; "7" is user 1, not "007"
    assert (0, 1) in g and (1, 1) in g and (1, 5) not in g
    table = pd.read_parquet(run_dir / "verdicts.parquet")
    assert table.loc[table["item_id"] == "i0", "user_id"].tolist() == ["007"]


BAD = {
    "missing column": ([("007", "i0")], ("user", "item"), "missing column 'verdict'"),
    "unknown user": ([("007", "i0", "noisy"), ("07", "i1", "hard")], None,
                     "row 2, column user: unknown user id '07'"),
    "unknown item": ([("7", "i9", "hard")], None, "row 1, column item: unknown item id 'i9'"),
    "unknown verdict": ([("7", "i1", "maybe")], None,
                        "row 1, column verdict: unknown verdict 'maybe'"),
    "empty value": ([("007", "i0", "noisy"), ("7", "", "hard")], None,
                    "row 2, column item: empty value ''"),
    "conflicting duplicate": ([("7", "i1", "hard"), ("007", "i0", "noisy"), ("7", "i1", "noisy")],
                              None, "row 3, column verdict: 'noisy' conflicts with row 1's 'hard'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_row_is_one_line_and_the_run_folder_stays_as_it_was(tmp_path, run_dir, case):
    rows, columns, needle = BAD[case]
    path = write(tmp_path / "bad.csv", rows, columns or ("user", "item", "verdict"))
    before = folder_hashes(run_dir)
    with pytest.raises(UserError) as err:
        import_verdicts(run_dir, path, source="lab", data=data())
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and needle in msg
    assert folder_hashes(run_dir) == before


def test_identical_repeats_collapse_and_a_wrong_field_count_is_refused(tmp_path, run_dir):
    path = write(tmp_path / "v.csv", [("7", "i1", "hard"), ("7", "i1", " HARD ")])
    counts = import_verdicts(run_dir, path, source="lab", data=data())
    assert counts["pairs"] == 1 and counts["duplicates_collapsed"] == 1
    path.write_text("user,item,verdict\n7,i1,hard,0.9\n")
    with pytest.raises(UserError, match=r"v.csv row 1: 4 fields where the header has 3"):
        import_verdicts(run_dir, path, source="lab", data=data())
    with pytest.raises(UserError, match=r"unknown file type '.txt'"):
        import_verdicts(run_dir, tmp_path / "v.txt", source="lab", data=data())


def test_skip_unknown_drops_and_counts_by_reason(tmp_path, run_dir):
    path = write(tmp_path / "v.csv", [("007", "i0", "noisy"), ("x", "i1", "hard"),
                                     ("y", "i9", "hard"), ("7", "i9", "noisy")])
    counts = import_verdicts(run_dir, path, source="lab", data=data(), skip_unknown=True)
    assert counts["dropped_unknown"] == {"unknown_user": 2, "unknown_item": 1}
    assert counts["pairs"] == 1 and counts["actions"]["remove"] == 1
    only_unknown = write(tmp_path / "w.csv", [("x", "i1", "hard")])
    with pytest.raises(UserError, match="every one of its 1 rows was dropped as unknown"):
        import_verdicts(run_dir, only_unknown, source="lab", data=data(), skip_unknown=True)


def test_held_out_hard_pairs_are_counted_and_not_added_unless_asked(tmp_path, run_dir):
    d = data()
    path = write(tmp_path / "v.csv", [("007", "i3", "hard"), ("7", "i0", "hard"),
                                     ("u4", "i1", "hard")])
    counts = import_verdicts(run_dir, path, source="lab", data=d)
    assert counts["held_out"] == {"validation": 1, "test": 1, "kept_as_adds": False}
    assert counts["actions"]["add"] == 1 and counts["actions"]["none"] == 2
    table = pd.read_parquet(run_dir / "verdicts.parquet")
    assert sorted(table.loc[table["reason"] == "held_out", "held_out"]) == ["test", "validation"]
    assert (table["verdict"] == "hard").all()  # the file's verdict is kept
    g = gprime(run_dir, d)
    assert (0, 3) not in g and (1, 0) not in g and (3, 1) in g

    counts = import_verdicts(run_dir, path, source="lab", data=d, keep_held_out=True)
    assert counts["held_out"] == {"validation": 1, "test": 1, "kept_as_adds": True}
    assert counts["actions"]["add"] == 3
    assert {(0, 3), (1, 0), (3, 1)} <= gprime(run_dir, d)


def test_a_user_whose_every_edge_is_removed_keeps_them(tmp_path, run_dir):
    d = data()
    path = write(tmp_path / "v.csv", [("u3", "i4", "noisy"), ("u4", "i0", "noisy"),
                                     ("u4", "i5", "noisy"), ("7", "i1", "noisy")])
    counts = import_verdicts(run_dir, path, source="lab", data=d)
    assert counts["users_kept"] == {"users": 2, "edges": 3}
    assert counts["actions"]["remove"] == 1 and counts["actions"]["keep"] == 3
    table = pd.read_parquet(run_dir / "verdicts.parquet")
    assert set(table.loc[table["reason"] == "last_edges_of_user", "user_id"]) == {"u3", "u4"}
    g = gprime(run_dir, d)
    assert {(2, 4), (3, 0), (3, 5)} <= g and (1, 1) not in g


def test_the_setting_is_checked_and_keeps_finished_run_keys(tmp_path):
    with pytest.raises(ConfigError, match="verdicts.file: .*none.csv: no such file"):
        VerdictSettings(file=str(tmp_path / "none.csv"), source="lab")
    path = write(tmp_path / "v.csv", GOOD)
    with pytest.raises(ConfigError, match="verdicts.source must say where"):
        VerdictSettings(file=str(path), source=" ")
    # the import's settings at their defaults leave the verdicts stage's key as it was
    from llmhni_local.core.config import to_dict

    old = {k: v for k, v in to_dict(VerdictSettings()).items()
           if k not in ("file", "source", "keep_held_out", "skip_unknown")}
    assert stage_key("verdicts", {"verdicts": to_dict(VerdictSettings())}, {"rate": "r"}) == \
        stage_key("verdicts", {"verdicts": old}, {"rate": "r"})
    assert stage_key("verdicts", {"verdicts": to_dict(VerdictSettings(keep_held_out=True))},
                     {"rate": "r"}) != stage_key("verdicts", {"verdicts": old}, {"rate": "r"})


# ---------------------------------------------------------------------------- the commands
def test_cli_import_exits_2_with_one_line_on_a_bad_file(tmp_path, profiled_run):
    run, d = profiled_run
    bad = write(tmp_path / "bad.csv", [(d.user_ids[0], d.item_ids[0], "noisy"),
                                       (d.user_ids[1], "nope", "hard")])
    before = folder_hashes(run)
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "verdicts", "import", str(run),
                        str(bad), "--source", "lab"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0] == f"error: {bad} row 2, column item: unknown item id 'nope' (not among " \
                       f"the data's {d.n_items} item ids)"
    assert folder_hashes(run) == before


def test_cli_decide_still_decides(rated_run):
    from typer.testing import CliRunner

    from llmhni_local.cli import app

    res = CliRunner().invoke(app, ["verdicts", "decide", str(rated_run)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "verdicts: observed keep" in res.output
    counts = json.loads((rated_run / "verdicts.json").read_text())
    assert "imported" not in counts and counts["observed"]["total"] > 0


def test_pipeline_imports_the_file_and_trains_on_it(tmp_path, files_data):
    pytest.importorskip("sentence_transformers")
    from typer.testing import CliRunner

    from llmhni_local.cli import app
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
    rows = [(d.user_ids[u], d.item_ids[i], "noisy") for u, i in removed]
    rows += [(d.user_ids[u], d.item_ids[i], "hard") for u, i in added]
    v1 = write(tmp_path / "v1.csv", rows)
    settings = {"data.source": source, "embedder.backend": "sentence-transformers",
                "train.epochs": 2, "train.eval_every": 1, "train.min_epochs": 1,
                "train.patience": 1, "model.dim": 8, "llmhni.align.epochs": 2,
                "tune.kind": "none", "candidates.budget": 20, "pipeline.methods": ["bpr-gprime"],
                "pipeline.out": str(tmp_path / "run")}
    cfg = load_run_config("configs/ml100k.toml", {**settings, "verdicts.file": str(v1),
                                                  "verdicts.source": "lab"})
    run = run_pipeline(cfg, progress=False, log=lambda _: None)
    folder = run.dir
    assert not (folder / "judgments.sqlite").exists()  # nothing was rated
    denoise = json.loads((folder / "train" / "bpr-gprime" / "seed0" / "manifest.json")
                         .read_text())["denoise"]
    assert denoise["removed"] == 3 and denoise["added"] == 2
    g = gprime(folder, d)
    assert not set(removed) & g and set(added) <= g
    results = json.loads((folder / "results.json").read_text())
    assert results["rater"]["kind"] == "imported" and results["rater"]["source"] == "lab"
    assert "Verdicts of bpr-gprime: verdicts imported from lab (v1.csv" in \
        (folder / "report.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"]["rater"]["imported"] is True

    # a new file content is a new verdicts key; the same content is the same key
    again = Run(cfg, progress=False, log=lambda _: None)
    again.keys["data"] = again.key("data")
    assert again.key("verdicts") == json.loads((folder / "stages" / "verdicts.json")
                                               .read_text())["key"]
    v1.write_text(v1.read_text().replace("noisy", "hard", 1))
    assert again.key("verdicts") != json.loads((folder / "stages" / "verdicts.json")
                                               .read_text())["key"]

    # verdicts imported by hand into the folder: `train --run` trains on them, and the
    # pipeline neither reuses its own stage over them nor decides over them in silence
    v2 = write(tmp_path / "v2.csv", [(d.user_ids[u], d.item_ids[i], "noisy")
                                     for u, i in removed[:1]])
    res = CliRunner().invoke(app, ["verdicts", "import", str(folder), str(v2), "--source", "b"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "observed keep 0, remove 1" in res.output
    out = tmp_path / "bpr-gprime"
    res = CliRunner().invoke(app, ["train", "--out", str(out), "--method", "bpr-gprime", "--run",
                                   str(folder), "--epochs", "1", "--quiet"])
    assert res.exit_code == 0, (res.output, res.exception)
    denoise = json.loads((out / "manifest.json").read_text())["denoise"]
    assert denoise["removed"] == 1 and denoise["added"] == 0
    assert stale(again) == ["verdicts.parquet"]
    plain = load_run_config("configs/ml100k.toml", settings)
    with pytest.raises(ConfigError, match="its verdicts were imported from .*v2.csv"):
        run_pipeline(plain, progress=False, log=lambda _: None)
