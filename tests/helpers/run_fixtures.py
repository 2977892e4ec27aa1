"""Fixtures of the audit tests: a small synthetic run folder rated by a deterministic fake
rater (profiles, candidates, judgments, rating.json), and helpers to write label files.

(``tests`` is shadowed by a site-packages package, so helpers are handed out as fixtures.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.api import LABELS, Judgment, Rater, unserved


class FakeRater(Rater):
    """Answers depend on the prompt alone; about one answer in ten is not a label."""

    model_id = "fake@0"
    loglikelihood = unserved("loglikelihood")

    def judge(self, requests):
        out = []
        for r in requests:
            h = hashlib.sha256(json.dumps(r.messages, sort_keys=True).encode()).digest()
            w = [1.0 + b for b in h[:3]]
            probs = {lab: x / sum(w) for lab, x in zip(LABELS, w)}
            if h[3] % 10 == 0:
                out.append(Judgment("Not sure.", None, probs, 0.3))
            else:
                best = max(probs, key=probs.get)
                out.append(Judgment(best, best, probs, 0.6))
        return out


def synth(n_users=16, n_items=24, per_user=8, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    pairs, ratings = [], []
    for u in range(n_users):
        for i in rng.choice(n_items, per_user, replace=False):
            pairs.append((u, int(i)))
            ratings.append(float(rng.integers(1, 6)))
    genres = ["Drama", "Comedy", "Action, Thriller", "Animation"]
    return Interactions(
        name="synth", n_users=n_users, n_items=n_items, train=np.array(pairs),
        val=np.zeros((0, 2), dtype=np.int64), test=np.zeros((0, 2), dtype=np.int64),
        train_rating=np.array(ratings, dtype=np.float32),
        user_meta=[{"age": str(20 + u), "occupation": "student"} for u in range(n_users)],
        item_meta=[{"title": f"Film {i}", "year": str(1980 + i), "genres": genres[i % 4]}
                   for i in range(n_items)])


def build_run(folder: Path, *, rate: bool = True, k_neg: int = 3, k_pos: int = 3) -> Path:
    """Profiles and candidates of :func:`synth` (and the fake rater's judgments) in ``folder``."""
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import rate_candidates
    from llmhni_local.llmhni.candidates import CANDIDATES_FILE, save_candidates, select_candidates
    from llmhni_local.text.profiles import make_profiles, save_profiles

    data = synth()
    save_profiles(folder, make_profiles(data))
    scores = np.random.default_rng(1).normal(size=(data.n_users, data.n_items))
    c = select_candidates(lambda u: scores[u], data.user_item_lists("train"), data.n_items,
                          k_neg=k_neg, k_pos=k_pos)
    save_candidates(folder / CANDIDATES_FILE, c)
    if rate:
        rate_candidates(folder, FakeRater, model_id="fake@0",
                        settings=RateSettings(max_failure_share=1.0), progress=False)
    return folder


@pytest.fixture(scope="session")
def _rated_template(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("rated") / "run")


@pytest.fixture
def rated_run(_rated_template, tmp_path) -> Path:
    """A fresh copy of the rated synthetic run (tests may write into it)."""
    dest = tmp_path / "run"
    shutil.copytree(_rated_template, dest)
    return dest


@pytest.fixture(scope="session")
def synth_data():
    return synth


@pytest.fixture(scope="session")
def write_labels():
    """``write_labels(path, rows)``: a CSV or JSONL label file from a list of dicts."""

    def write(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
        frame = pd.DataFrame(rows, columns=columns)
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write


@pytest.fixture(scope="session")
def fake_rater():
    return FakeRater
