"""Every script in examples/ runs as a subprocess on tiny inputs and prints real figures.

Each test checks what the script prints (values in range, the expected number of rows), and
where it writes a run folder, that the printed figures are the ones stored there.
"""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N_USERS, N_ITEMS, PER_USER = 30, 40, 15
GENRES = ("Comedy", "Drama", "Horror", "Sci-Fi")


def run_example(name: str, *args: str, timeout: int = 240) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> Path:
    """A `files:` data folder: 30 users x 15 rated, timestamped interactions over 40 items,
    with item texts (profiles need them)."""
    folder = tmp_path_factory.mktemp("tiny_files")
    rng = random.Random(0)
    with open(folder / "interactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "rating", "timestamp"])
        for u in range(N_USERS):
            for t, i in enumerate(rng.sample(range(N_ITEMS), PER_USER)):
                w.writerow([f"u{u}", f"i{i}", rng.choice([1, 2, 3, 4, 4, 5, 5]), 1000 * u + t])
    with open(folder / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(N_ITEMS):
            w.writerow([f"i{i}", f"Film {i}\nGenres: {GENRES[i % len(GENRES)]}"])
    return folder


def test_train_lightgcn(tiny_files, tmp_path):
    out = tmp_path / "run"
    text = run_example("train_lightgcn.py", "--data", f"files:{tiny_files}", "--epochs", 1,
                       "--out", out)
    assert f"{N_USERS} users, {N_ITEMS} items" in text
    recall = number(r"test Recall@20 ([0-9.]+)", text)
    ndcg = number(r"test NDCG@20 ([0-9.]+)", text)
    assert 0.0 <= recall <= 1.0 and 0.0 <= ndcg <= 1.0
    assert number(r"best epoch (\d+) of 1", text) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["recall@20"] == pytest.approx(recall, abs=5e-5)
    assert metrics["test"]["ndcg@20"] == pytest.approx(ndcg, abs=5e-5)


def test_embed_profiles(tiny_files, tmp_path):
    pytest.importorskip("sentence_transformers")
    text = run_example("embed_profiles.py", "--data", f"files:{tiny_files}", "--out", tmp_path)
    shapes = re.search(r"users \((\d+), (\d+)\), items \((\d+), (\d+)\)", text)
    assert shapes, text
    n_users, dim, n_items, dim_items = map(int, shapes.groups())
    assert (n_users, n_items) == (N_USERS, N_ITEMS) and dim == dim_items == 384  # MiniLM
    neighbours = re.findall(r"^  (-?[0-9.]+)  (Film \d+)", text, flags=re.MULTILINE)
    assert len(neighbours) == 5
    sims = [float(s) for s, _ in neighbours]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)
    assert (tmp_path / "embeddings" / "items.npy").is_file()


def test_llmhni_simulated(tiny_files, tmp_path):
    pytest.importorskip("sentence_transformers")
    out = tmp_path / "run"
    text = run_example("llmhni_simulated.py", "--data", f"files:{tiny_files}", "--epochs", 2,
                       "--methods", "bpr,llmhni,oracle", "--out", out)
    assert "SIMULATED" in text
    rows = re.findall(r"^(bpr|llmhni|oracle)\s+([0-9.]+)\s+([0-9.]+)$", text, flags=re.MULTILINE)
    assert [r[0] for r in rows] == ["bpr", "llmhni", "oracle"]
    results = json.loads((out / "results.json").read_text())
    assert results["simulated_rater"] is True
    for name, recall, ndcg in rows:
        assert 0.0 <= float(recall) <= 1.0 and 0.0 <= float(ndcg) <= 1.0
        assert results["methods"][name]["recall@20_mean"] == pytest.approx(float(recall),
                                                                           abs=5e-5)
        assert results["methods"][name]["ndcg@20_mean"] == pytest.approx(float(ndcg), abs=5e-5)


def test_rate_pairs(tiny_files, tiny_llama):
    users = 2
    text = run_example("rate_pairs.py", "--data", f"files:{tiny_files}", "--model", tiny_llama,
                       "--backend", "transformers", "--dtype", "float32", "--users", users)
    assert f"rater {tiny_llama.name}@" in text
    row = re.compile(r"^\s*(\d+) (observed|unobserved)\s+(user|item) (High|Medium|Low|-)\s+"
                     r"([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+(-?[0-9.]+)  (Film \d+)$",
                     flags=re.MULTILINE)
    rows = row.findall(text)
    assert len(rows) == users * 2 * 2, text  # two pairs per user, both views
    assert {(int(r[0]), r[1], r[2]) for r in rows} == {
        (u, k, v) for u in range(users) for k in ("observed", "unobserved")
        for v in ("user", "item")}
    for _, _, _, label, high, medium, low, mass, score, _ in rows:
        probs = {"High": float(high), "Medium": float(medium), "Low": float(low)}
        assert sum(probs.values()) == pytest.approx(1.0, abs=2e-3)
        assert probs[label] >= max(probs.values()) - 1e-3  # the likeliest label at the cue
        assert 0.0 <= float(mass) <= 1.0  # the random tiny model puts little on labels
        assert abs(float(score)) < 100  # a finite log-likelihood ratio
