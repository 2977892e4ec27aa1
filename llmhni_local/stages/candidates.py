"""Stage ``candidates`` (method stage 4): the pairs the rater reads, chosen by the pretrained
recommender's scores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmhni_local.core.errors import ConfigError
from llmhni_local.core.io import write_json
from llmhni_local.data.dataset import Interactions
from llmhni_local.llmhni.candidates import (
    CANDIDATES_FILE,
    CandidateSettings,
    count_kinds,
    coverage,
    load_candidates,
    save_candidates,
    select_candidates,
)
from llmhni_local.stages.context import Run
from llmhni_local.stages.rec_pre import score_fn_from_run
from llmhni_local.text.profiles import data_fingerprint


def choose_candidates(run_dir: str | Path, score_fn: Callable[[np.ndarray], np.ndarray],
                      dataset: "Interactions", settings: "CandidateSettings",
                      source: str) -> dict[str, Any]:
    """Select candidate pairs into ``candidates.parquet`` and describe them in
    ``candidates.json`` (settings, counts, data fingerprint, score source); returns the latter."""
    c = settings
    cands = select_candidates(score_fn, dataset.user_item_lists("train"), dataset.n_items,
                              k_neg=c.k_neg, k_pos=c.k_pos, k_pos_share=c.k_pos_share,
                              budget=c.budget, seed=c.seed, batch_users=c.batch_users)
    if not len(cands):
        raise ConfigError("candidates: the settings selected no pair (candidates.k_neg, k_pos, "
                          "k_pos_share, budget)")
    save_candidates(Path(run_dir) / CANDIDATES_FILE, cands)
    info = {"settings": dataclasses.asdict(c), "counts": count_kinds(cands),
            "pairs": int(len(cands)), "users": int(len(np.unique(cands["user"]))),
            "data": data_fingerprint(dataset), "source": str(source)}
    write_json(Path(run_dir) / "candidates.json", info)
    return info


def run_stage(run: Run) -> dict:

    info = choose_candidates(run.dir, score_fn_from_run(run.dir / "rec_pre", run.data), run.data,
                             run.cfg.candidates, source=str(run.dir / "rec_pre"))
    cands = load_candidates(run.dir / CANDIDATES_FILE)
    cov = coverage(cands, run.data.train, run.data.train_noise)
    return {"pairs": info["pairs"], **info["counts"], **({"coverage": cov} if cov else {})}
