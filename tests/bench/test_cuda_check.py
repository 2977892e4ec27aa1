"""bench/cuda_check.py run as a user would (a subprocess), on a tiny MovieLens-shaped folder:
its CPU-only mode, its clean skip without CUDA, its data export and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "cuda_check.py"
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")


def run(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_ml(tmp_path_factory) -> Path:
    """MovieLens-100K's three parquet files in its schema: 40 users, 60 items, 20 ratings
    each (about a third rated <= 2, the natural-noise flags the simulated rater reads)."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from llmhni_local.data import movielens

    folder = tmp_path_factory.mktemp("tiny_ml")
    rng = np.random.default_rng(0)
    n_users, n_items, per_user = 40, 60, 20
    ratings = pd.DataFrame([
        {"user_id": u + 1, "movie_id": int(i) + 1, "rating": int(rng.integers(1, 6)),
         "timestamp": 880_000_000 + int(rng.integers(0, 10**7))}
        for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False)])
    users = pd.DataFrame({"user_id": np.arange(1, n_users + 1), "age": rng.integers(18, 70, n_users),
                          "gender": rng.choice(["M", "F"], n_users),
                          "occupation": rng.choice(["student", "writer"], n_users),
                          "zip_code": ["00000"] * n_users})
    items = pd.DataFrame({"movie_id": np.arange(1, n_items + 1),
                          "movie_title": [f"Film {i} (1995)" for i in range(n_items)],
                          "release_date": ["01-Jan-1995"] * n_items,
                          **{g: rng.integers(0, 2, n_items) for g in GENRES}})
    files = dict(zip(("ratings", "users", "items"), (ratings, users, items)))
    for key, name in movielens._FILES.items():
        files[key].to_parquet(folder / name)
    return folder


def test_cpu_only_runs_every_part_and_ends_with_its_json(tiny_ml):
    r = run("--data", tiny_ml, "--cpu-only", "--epochs", 2, "--dim", 8, "--batch-size", 128,
            "--prompts", 8, "--threads", 1)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    fig = json.loads(lines[-1])
    assert "training, 2 epochs" in r.stdout and "tiny random Llama" in r.stdout
    assert fig["devices"] == ["cpu", "cpu"] and fig["device"]["device"] == "cpu"
    assert fig["vllm_imported"] is False
    train = fig["train"]
    for run_name in ("lightgcn_bpr", "llmhni"):
        t = train[run_name]
        assert all(np.isfinite(t["final_loss"])) and len(t["epoch_s"]) == 2
        # one thread, same seed, same device: the CPU is reproducible bit for bit
        assert t["loss_max_abs_diff"] == 0.0 and t["metric_max_abs_diff"] == 0.0, run_name
    assert train["align"]["z_max_abs_diff"] == 0.0
    assert train["denoise"]["simulated"] is True and train["denoise"]["removed"] > 0
    rater, probe = fig["llm"]["rater"], fig["llm"]["probe"]
    assert rater["prompts"] == 8 and rater["model_on"] == ["cpu", "cpu"]
    assert rater["prob_max_abs_diff"] == 0.0 and rater["labels_agree"] == 1.0
    # the second run reads states by a full pass (the CUDA path), the first by the hooks
    assert probe["state_max_abs_diff"] <= fig["tolerance"]["probe_state"]
    assert all(fig["within_tolerance"].values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_one_line_and_exit_0(tiny_ml):
    r = run("--data", tiny_ml)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == [r.stdout.strip()]
    assert r.stdout.startswith("CUDA is not available")


def test_export_copies_the_three_files(tmp_path):
    from llmhni_local.core.errors import UserError
    from llmhni_local.data import movielens

    try:
        source = movielens.ml100k_dir()
    except UserError as exc:
        pytest.skip(str(exc))
    r = run("--export-data", tmp_path / "ml")
    assert r.returncode == 0, r.stderr
    fig = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(fig["files"]) == set(movielens._FILES.values())
    for name in movielens._FILES.values():
        assert (tmp_path / "ml" / name).read_bytes() == (source / name).read_bytes()
    assert sum(fig["files"].values()) < 5_000_000  # a few MB to carry


@pytest.mark.parametrize("args,needle", [
    (("--data", "{tmp}/none"), "MovieLens-100K folder not found"),
    (("--data", "{tmp}", "--cpu-only"), "lacks MovieLens100k_data.parquet.brotli"),
    ((), "give exactly one of --data FOLDER and --export-data FOLDER"),
])
def test_bad_arguments_fail_in_one_line(tmp_path, args, needle):
    r = run(*(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert needle in lines[-1] and "Traceback" not in r.stderr
