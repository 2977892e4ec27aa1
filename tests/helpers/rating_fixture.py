"""A run folder big enough to rate into a store of thousands of rows, and a deterministic fake
rater; loaded by path (see tests/conftest.py) and run as a script in a subprocess:

    python rating_fixture.py RUN [BATCH]   # rate RUN's candidates with the fake rater
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from llmhni_local.engine.api import LABELS, Judgment, Rater, unserved

MODEL_ID = "fake@0"


class FakeRater(Rater):
    """The answer depends on the prompt alone, so a resumed run stores what an uninterrupted
    one would."""

    model_id = MODEL_ID
    loglikelihood = unserved("loglikelihood")

    def judge(self, requests):
        out = []
        for r in requests:
            h = hashlib.sha256(json.dumps(r.messages, sort_keys=True).encode()).digest()
            w = [1.0 + b for b in h[:3]]
            probs = {lab: x / sum(w) for lab, x in zip(LABELS, w)}
            best = max(probs, key=probs.get)
            out.append(Judgment(best + ".", best, probs, 0.5 + h[4] / 512))
        return out


def make_run(folder: Path, *, n_users: int = 200, n_items: int = 60, per_user: int = 8,
             k_neg: int = 10, k_pos: int = 5, seed: int = 0) -> Path:
    """Profiles and candidates of a random data set: ``n_users * (k_neg + k_pos)`` pairs."""
    from llmhni_local.data.dataset import Interactions
    from llmhni_local.llmhni.candidates import CANDIDATES_FILE, save_candidates, select_candidates
    from llmhni_local.text.profiles import make_profiles, save_profiles

    rng = np.random.default_rng(seed)
    pairs = [(u, int(i)) for u in range(n_users)
             for i in rng.choice(n_items, per_user, replace=False)]
    data = Interactions(
        name="synth", n_users=n_users, n_items=n_items, train=np.array(pairs),
        val=np.zeros((0, 2), dtype=np.int64), test=np.zeros((0, 2), dtype=np.int64),
        train_rating=rng.integers(1, 6, len(pairs)).astype(np.float32),
        user_meta=[{"age": str(20 + u % 50), "occupation": "tester"} for u in range(n_users)],
        item_meta=[{"title": f"Film {i}", "year": str(1980 + i % 40), "genres": "Drama"}
                   for i in range(n_items)])
    folder.mkdir(parents=True, exist_ok=True)
    save_profiles(folder, make_profiles(data))
    scores = np.random.default_rng(seed + 1).normal(size=(n_users, n_items))
    c = select_candidates(lambda u: scores[u], data.user_item_lists("train"), n_items,
                          k_neg=k_neg, k_pos=k_pos, budget=0, seed=seed)
    save_candidates(folder / CANDIDATES_FILE, c)
    return folder


def rate(folder: Path, batch: int = 64):
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import rate_candidates

    return rate_candidates(folder, FakeRater, model_id=MODEL_ID, progress=False,
                           settings=RateSettings(batch_size=batch, max_failure_share=1.0))


if __name__ == "__main__":
    from llmhni_local.core.errors import UserError

    try:
        rep = rate(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 64)
    except UserError as exc:  # as the CLI prints it
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"rated": rep.rated, "skipped": rep.skipped}))
