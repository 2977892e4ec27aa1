"""Every row of the method table trains, from the pipeline and from ``train --method``."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from llmhni_local.core.errors import ConfigError  # noqa: E402
from llmhni_local.pipeline.runner import run_pipeline  # noqa: E402
from llmhni_local.stages.methods import METHOD_TABLE, check_methods  # noqa: E402
from llmhni_local.stages.settings import load_run_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NEW = ["wbpr", "dns", "bod", "simgcl", "xsimgcl", "rlmrec-con", "rlmrec-gen", "bpr-gprime"]
SMALL = {
    "data.max_users": 60, "embedder.backend": "sentence-transformers",
    "train.epochs": 2, "train.eval_every": 1, "train.min_epochs": 1, "train.patience": 1,
    "model.dim": 16, "llmhni.align.epochs": 2, "tune.kind": "none",
    "pipeline.rater": "simulated", "candidates.budget": 40,
}


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A simulated-rater run on a slice of MovieLens-100K per backbone, every new row trained."""
    try:
        from llmhni_local.data.movielens import ml100k_dir

        ml100k_dir()
    except Exception as exc:
        pytest.skip(f"MovieLens-100K unavailable: {exc}")
    import shutil

    out = {}
    for backbone in ("lightgcn", "ngcf"):
        folder = tmp_path_factory.mktemp(backbone) / "run"
        if out:  # the profiles, embeddings and alignment do not depend on the backbone
            shutil.copytree(out["lightgcn"], folder)
        cfg = load_run_config("configs/ml100k.toml", {**SMALL, "model.name": backbone,
                                                       "pipeline.out": str(folder),
                                                       "pipeline.methods": NEW})
        run_pipeline(cfg, progress=False, log=lambda _: None)
        out[backbone] = folder
    return out


def test_the_paper_baselines_are_rows():
    assert set(NEW) <= set(METHOD_TABLE)
    with pytest.raises(ConfigError, match="known: bpr, wbpr"):
        load_run_config(None, {"pipeline.methods": ["simgcl", "lightgcl"]})


def test_train_help_names_every_row():
    from llmhni_local.cli.train import METHOD_HELP

    named = METHOD_HELP.split(": ", 1)[1].split(" (default")[0].split(", ")
    assert named == list(METHOD_TABLE)


def test_rlmrec_is_refused_on_data_without_text(synth_data):
    data = synth_data().replace(item_meta=None, item_text=None, name="bare")
    with pytest.raises(ConfigError, match="rlmrec-gen .*bare has no item text"):
        check_methods(["bpr", "rlmrec-gen"], data)
    check_methods(["bpr", "simgcl"], data)  # the others need none


@pytest.mark.parametrize("backbone", ["lightgcn", "ngcf"])
def test_every_new_row_trains_on_both_backbones(runs, backbone):
    results = json.loads((runs[backbone] / "results.json").read_text())["methods"]
    assert set(results) == set(NEW)
    for m in NEW:
        assert np.isfinite(results[m]["recall@20_mean"]) and results[m]["recall@20_mean"] > 0
        manifest = json.loads((runs[backbone] / "train" / m / "seed0" / "manifest.json").read_text())
        assert manifest["method"] == m
        assert manifest["settings"]["model"]["name"] == backbone


def test_bpr_on_gprime_trains_on_the_verdicts_graph(runs):
    folder = runs["lightgcn"]
    manifest = json.loads((folder / "train" / "bpr-gprime" / "seed0" / "manifest.json").read_text())
    assert manifest["denoise"]["removed"] > 0 and manifest["simulated"] is True


def test_cli_trains_a_baseline_without_a_run(tmp_path):
    out = tmp_path / "x"
    r = cli("train", "--out", str(out), "--method", "wbpr", "--max-users", "60", "--epochs",
            "2", "--eval-every", "1", "--min-epochs", "1", "--dim", "8", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["method"] == "wbpr"


def test_cli_trains_run_methods_from_the_run(runs, tmp_path):
    for m in ("bpr-gprime", "rlmrec-con", "llmhni-dns"):
        out = tmp_path / m
        r = cli("train", "--out", str(out), "--method", m, "--run", str(runs["lightgcn"]),
                "--epochs", "1", "--quiet")
        assert r.returncode == 0, r.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["method"] == m and manifest["settings"]["data"]["max_users"] == 60
    # LLMHNI with DNS negatives: the pool's best score, the similarity weighed at nothing
    used = json.loads((tmp_path / "llmhni-dns" / "manifest.json").read_text())["llmhni"]
    assert (used["similarity_rule"], used["beta"], used["semantic_negatives"]) == ("combined", 0.0,
                                                                                   True)


@pytest.mark.parametrize("args,needle", [
    (("--method", "lightgcl"), "unknown method 'lightgcl' (known: bpr, wbpr"),
    (("--method", "llmhni"), "llmhni reads a pipeline run's verdicts: give --run RUN"),
    (("--method", "rlmrec-con"), "rlmrec-con reads a pipeline run's profile embeddings"),
    (("--method", "tce", "--loss", "sgl"), "--method tce and --loss sgl disagree"),
    (("--method", "llmhni", "--run", "{tmp}/none"), "none/manifest.json: not a pipeline run"),
])
def test_cli_refusals_are_one_line(tmp_path, args, needle):
    r = cli("train", "--out", str(tmp_path / "x"), *(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "x").exists()


def test_cli_run_refuses_other_data(runs, tmp_path):
    r = cli("train", "--out", str(tmp_path / "x"), "--method", "bpr-gprime", "--run",
            str(runs["lightgcn"]), "--data", "ml100k")
    assert r.returncode == 2 and "trains on that run's data and settings; drop data.source" in r.stderr


def test_rec_pre_key_leaves_out_other_losses_knobs():
    from llmhni_local.stages.plan import reads

    a = load_run_config(None, {})
    b = load_run_config(None, {"train.ssl_weight": 0.5, "train.tce_max_drop": 0.2,
                               "train.loss": "sgl"})
    c = load_run_config(None, {"train.lr": 0.01})
    settings, _ = reads(a, "rec_pre")
    assert "train.lr" in settings and "train.ssl_weight" not in settings
    from llmhni_local.stages.context import setting

    def values(cfg):
        return {s: setting(cfg, s) for s in reads(cfg, "rec_pre")[0]}

    assert values(a) == values(b) and values(a) != values(c)


def test_a_folder_another_cell_trained_over_is_trained_again(runs):
    """Two cells sharing a folder: a (method, seed) folder whose key is not the one the settings
    ask for (another cell trained there, then stopped) makes the train stage run again."""
    folder = runs["lightgcn"]
    key_file = folder / "train" / "wbpr" / "seed0" / "method_key.txt"
    key_file.write_text("another cell's run")
    cfg = load_run_config("configs/ml100k.toml", {**SMALL, "pipeline.out": str(folder),
                                                   "pipeline.methods": NEW})
    logs = []
    again = run_pipeline(cfg, progress=False, log=logs.append)
    assert again.ran["train"]
    redone = [line for line in logs if line.startswith("[train] ") and " seed 0" in line]
    # the right run is in the train store, so it comes back from there; the others stay
    assert [line for line in redone if "unchanged" not in line] == [
        "[train] wbpr seed 0: reused from train_store/"]
    assert key_file.read_text() != "another cell's run"


def test_cli_run_refuses_a_folder_stopped_part_way_and_data_changes(runs, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(runs["lightgcn"], folder)
    r = cli("train", "--out", str(tmp_path / "x"), "--method", "bpr-gprime", "--run",
            str(folder), "--set", "data.max_users=10")
    assert r.returncode == 2 and "data.max_users: a run folder's data" in r.stderr
    record = folder / "stages" / "verdicts.json"
    rec = json.loads(record.read_text())
    record.write_text(json.dumps({**rec, "key": "a later, unfinished run"}))
    r = cli("train", "--out", str(tmp_path / "x"), "--method", "bpr-gprime", "--run", str(folder))
    assert r.returncode == 2 and "stage verdicts was re-run after manifest.json" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
