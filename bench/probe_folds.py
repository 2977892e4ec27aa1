"""Probe folds: does a probe's cross-validated AUC rise when a user's pairs sit on both sides?

A probe head (``llmhni_local.tune.probe``) is cross-validated twice on the same hidden states
of SmolLM2-135M: with folds grouped by user (as the toolkit does) and with random folds. The
labels are SIMULATED from MovieLens-100K training ratings (<= 2 Low); ``--users`` users with at
least 40 training items give ``--pairs`` pairs each, so random folds put a user's other pairs in
training. A gap between the two is what the head learns of the user, not of the pair.

    python bench/probe_folds.py                 # 40 users x 10 pairs (~3 min on 2 cores)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import emit_json, print_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=40)
    p.add_argument("--pairs", type=int, default=10, help="labelled pairs per user")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=5)
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    import pandas as pd
    from rater_quality import sample_pairs

    from llmhni_local.backends.probe_states import state_dtype
    from llmhni_local.data.movielens import load_ml100k
    from llmhni_local.engine.api import LABELS
    from llmhni_local.eval.stats import group_folds
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.text.profiles import make_profiles
    from llmhni_local.tune.probe import ProbeSettings, compute_states, prepare_inputs
    from llmhni_local.tune.probe_head import grid_cv

    data = load_ml100k()
    profiles = make_profiles(data)
    rng = np.random.default_rng(args.seed)
    counts = np.bincount(data.train[:, 0], minlength=data.n_users)
    users = rng.choice(np.flatnonzero(counts >= 40), args.users, replace=False)
    labels = pd.concat([sample_pairs(data, np.array([u]), args.pairs, int(u)) for u in users],
                       ignore_index=True)
    settings = ProbeSettings(folds=args.folds)
    t0 = time.perf_counter()
    inputs = prepare_inputs(profiles, labels, settings, RateSettings().max_liked)
    states, layers, _ = compute_states(inputs, settings, state_dtype())
    states_s = time.perf_counter() - t0
    y = np.array([LABELS.index(lab) for lab in labels["label"]])
    folds = {"grouped by user": group_folds(labels["user"].to_numpy(), y, args.folds, 0),
             "random": np.random.default_rng(0).permutation(len(y)) % args.folds}
    result: dict = {"bench": "probe_folds", "users": args.users, "pairs_per_user": args.pairs,
                    "label_counts": np.bincount(y, minlength=3).tolist(), "states_s": states_s}
    rows = []
    for view, x in states.items():
        for name, f in folds.items():
            grid = grid_cv(x, y, f, settings.cs)
            best = max(grid, key=lambda r: r["auc_low"])
            chosen = min(grid, key=lambda r: r["log_loss"])
            key = f"{view}/{name.split()[0]}"
            result[f"{key}/auc_low_best"] = best["auc_low"]
            result[f"{key}/auc_low_chosen"] = chosen["auc_low"]
            rows.append([view, name, best["auc_low"], layers[best["layer_pos"]], chosen["auc_low"]])
    print_table(["view", "folds", "AUC(Low) best of grid", "its layer", "AUC(Low) at min log-loss"],
                rows, title=f"Probe CV on {len(y)} SIMULATED labels of {args.users} users", digits=3)
    return result


if __name__ == "__main__":
    emit_json(main(parse_args()))
