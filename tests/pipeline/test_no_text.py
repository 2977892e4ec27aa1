"""LLMHNI on data without item text (docs/DESIGN.md, "Data without text"): an RLMRec folder
without profile files and verdicts made elsewhere is a whole run from the command line, and
``run --until`` prepares a folder for ``verdicts import``."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from llmhni_local.core.errors import ConfigError
from llmhni_local.llmhni.text_free import without_text_notes
from llmhni_local.pipeline.runner import run_pipeline
from llmhni_local.stages.context import Run
from llmhni_local.stages.methods import check_methods
from llmhni_local.stages.plan import NO_TEXT_CONTENT
from llmhni_local.stages.settings import load_run_config

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "rlmrec-amazon"
SMALL = {"train.epochs": 2, "train.eval_every": 1, "train.min_epochs": 1, "train.patience": 1,
         "model.dim": 16, "candidates.budget": 40, "tune.kind": "none"}
METHODS = '["bpr","llmhni","bpr-gprime"]'


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def sets(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """An RLMRec folder of 40 users x 60 items, no profile files, and a verdicts file in its
    raw ids: 6 training pairs judged noisy, 6 pairs of no split judged hard."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("data") / "bare"
    folder.mkdir()
    splits: dict[str, list] = {"trn": [], "val": [], "tst": []}
    for u in range(40):
        items = rng.choice(60, size=12, replace=False)
        splits["trn"] += [(u, i) for i in items[:8]]
        splits["val"] += [(u, i) for i in items[8:10]]
        splits["tst"] += [(u, i) for i in items[10:]]
    for name, pairs in splits.items():
        p = np.array(pairs)
        mat = sp.coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(40, 60))
        (folder / f"{name}_mat.pkl").write_bytes(pickle.dumps(mat))
    seen = {tuple(p) for ps in splits.values() for p in ps}
    unseen = [(u, i) for u in range(6) for i in range(60) if (u, i) not in seen][:6]
    rows = ([f"{u},{i},noisy" for u, i in splits["trn"][:48:8]]
            + [f"{u},{i},hard" for u, i in unseen])
    verdicts = folder.parent / "verdicts.csv"
    verdicts.write_text("user,item,verdict\n" + "\n".join(rows) + "\n")
    return folder, verdicts


def test_text_free_run_with_imported_verdicts_finishes(bare, tmp_path):
    folder, verdicts = bare
    out = tmp_path / "run"
    # nothing is embedded without item text: an embedder that is not there is not asked for
    r = cli("run", "--out", str(out), "--quiet", *sets({
        "data.source": f"rlmrec:{folder}", "verdicts.file": verdicts,
        "verdicts.source": "lab", "pipeline.methods": METHODS, **SMALL,
        "embedder.model": str(tmp_path / "no-such-embedder")}))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # one line, first, names the data and what is off
    said = [ln for ln in lines if "no item text or metadata" in ln]
    assert said == [lines[0]], r.stdout
    for part in ("without semantic negatives", "without alignment",
                 "Skipped stages: profiles, embed, align"):
        assert part in lines[0]
    assert "Clean-test ranking" in r.stdout and "bpr-gprime" in r.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"bpr", "llmhni", "bpr-gprime"}
    assert results["rater"]["kind"] == "imported"
    assert "**Without text: bare has no item text" in (out / "report.md").read_text()
    # what trained is what the settings say: the text switches off, no text stage's files
    used = json.loads((out / "train" / "llmhni" / "seed0" / "manifest.json").read_text())
    assert (used["llmhni"]["semantic_negatives"], used["llmhni"]["alignment"]) == (False, False)
    assert used["denoise"]["removed"] > 0 and used["denoise"]["added"] > 0
    assert not any((out / d).exists() for d in ("profiles", "embeddings", "align"))
    skipped = json.loads((out / "stages" / "profiles.json").read_text())
    assert skipped["summary"] == {"skipped": "no item text"}
    # one LLMHNI run retrained from the folder: it asks for no alignment files it never reads
    r = cli("train", "--out", str(tmp_path / "again"), "--method", "llmhni", "--run", str(out),
            "--epochs", "1", "--quiet")
    assert r.returncode == 0, r.stderr

    # the skipped stage's record is keyed apart: a run whose data had text would not take it
    cfg = load_run_config(None, {"data.source": f"rlmrec:{folder}", "pipeline.out": str(out)})
    run = Run(cfg, progress=False, log=lambda _: None)
    run.keys["data"] = run.key("data")
    assert run.key("profiles") != skipped["key"]
    assert run.key("profiles", NO_TEXT_CONTENT) == skipped["key"]


def test_text_free_refusals_are_one_line(bare, tmp_path, synth_data):
    folder, verdicts = bare
    base = {"data.source": f"rlmrec:{folder}", "verdicts.file": verdicts,
            "verdicts.source": "lab", **SMALL}
    r = cli("run", "--out", str(tmp_path / "run"), *sets(
        {**base, "pipeline.methods": '["bpr","rlmrec-con"]'}))
    assert r.returncode == 2 and "rlmrec-con" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run" / "stages").exists()
    # rows that differ from llmhni only in what is off would train llmhni itself
    data = synth_data().replace(item_meta=None, item_text=None, name="bare")
    for m in ("llmhni-no-semneg", "llmhni-no-align", "llmhni-dns"):
        with pytest.raises(ConfigError, match=f"{m} changes llmhni.* train what llmhni trains"):
            check_methods(["bpr", m], data)
    check_methods(["llmhni", "llmhni-no-denoise", "llmhni-no-hal", "bpr-gprime"], data)
    # an LLM rater has nothing to read: verdicts from elsewhere or the simulated rater
    cfg = load_run_config(None, {"data.source": f"rlmrec:{folder}", **SMALL,
                                 "pipeline.out": str(tmp_path / "llm"),
                                 "pipeline.methods": ["bpr", "llmhni"]})
    with pytest.raises(ConfigError, match="'llmhni', which reads verdicts.*verdicts.file"):
        run_pipeline(cfg, progress=False, log=lambda _: None)
    assert not (tmp_path / "llm" / "stages").exists()


def test_until_prepares_a_folder_for_verdicts_import(bare, tmp_path):
    folder, verdicts = bare
    out = tmp_path / "run"
    data = {"data.source": f"rlmrec:{folder}", **SMALL}
    r = cli("run", "--out", str(out), "--until", "data", "--quiet", *sets(data))
    assert r.returncode == 0, r.stderr
    assert "[run] stopped after data (--until)" in r.stdout and "Clean-test" not in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["until"] == "data" and list(manifest["stages"]) == ["data"]
    assert [p.name for p in (out / "stages").iterdir()] == ["data.json"]
    assert not (out / "results.json").exists()

    r = cli("verdicts", "import", str(out), str(verdicts), "--source", "lab")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "verdicts.json").read_text())["imported"] is True

    logs: list[str] = []
    cfg = load_run_config(None, {**data, "pipeline.out": str(out), "verdicts.file": str(verdicts),
                                 "verdicts.source": "lab", "pipeline.methods": ["bpr", "llmhni"]})
    run = run_pipeline(cfg, progress=False, log=logs.append)
    assert "[data] unchanged, reused" in logs and run.ran["train"]
    assert "until" not in json.loads((out / "manifest.json").read_text())
    assert set(json.loads((out / "results.json").read_text())["methods"]) == {"bpr", "llmhni"}


def test_the_items_decide(synth_data):
    """Users without text are written from the items they liked; user text alone is unused."""
    data = synth_data()
    assert without_text_notes(data.replace(user_meta=None, user_text=None)) == []
    assert without_text_notes(data.replace(item_meta=None, item_text=["a film"] * 24)) == []
    notes = without_text_notes(data.replace(item_meta=None, user_text=["reads"] * 16))
    assert len(notes) == 2 and notes[1].startswith("Its user texts are not used")


def test_until_checks_its_stage(tmp_path):
    cfg = load_run_config(None, {"pipeline.out": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="--until: unknown stage 'done'"):
        run_pipeline(cfg, until="done", progress=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="--from train comes after --until data"):
        run_pipeline(cfg, start="train", until="data", progress=False, log=lambda _: None)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"RLMRec Amazon split not found at {REAL}")
def test_real_amazon_split_prepares_candidates(tmp_path):
    """The published split, first 300 users: Rec_pre and candidates run, no text stage."""
    logs: list[str] = []
    cfg = load_run_config(None, {"data.source": f"rlmrec:{REAL}", "data.max_users": 300,
                                 **SMALL, "pipeline.out": str(tmp_path / "run")})
    run_pipeline(cfg, until="candidates", progress=False, log=logs.append)
    assert logs[0].startswith("[run] Without text: rlmrec-amazon-first300 has no item text")
    assert json.loads((tmp_path / "run" / "candidates.json").read_text())["pairs"] > 0
