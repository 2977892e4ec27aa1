"""Rating in process against rating as a Ray Data job on a local cluster: same rows, and the
cost of the Ray path.

One synthetic run folder (profiles and candidate pairs of made-up users and films) is copied
twice; the copies are rated by ``rate_candidates`` with ``rate.engine = "inprocess"`` and
``"ray"`` (one local cluster started first and timed apart), with the same rater settings.
Then the two judgment stores are compared row by row (labels, texts, probabilities). With the
transformers backend at ``--rater-batch-size 1`` nothing is padded, so the rows must be
identical to the last bit.

The overhead ratio is the Ray job's wall time (workers start, load the model and rate one
warm-up prompt; batches; shards written and merged) over the in-process call's wall time (its
model load included); the cluster's start-up is reported apart and in a second ratio.

Usage::

    python bench/rating_scale.py                       # the tiny random Llama (built here)
    python bench/rating_scale.py --model smollm2 --users 16
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit_json, print_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny",
                   help="'tiny' (a random 2-layer Llama built here), a registry name or a "
                        "model folder (default tiny)")
    p.add_argument("--backend", default="transformers", help="rating backend (default "
                                                              "transformers)")
    p.add_argument("--users", type=int, default=12, help="synthetic users (default 12)")
    p.add_argument("--k-neg", type=int, default=3, help="unobserved candidates per user")
    p.add_argument("--k-pos", type=int, default=2, help="observed candidates per user")
    p.add_argument("--batch-size", type=int, default=16, help="rate.batch_size (default 16)")
    p.add_argument("--rater-batch-size", type=int, default=1,
                   help="rater.batch_size; 1 pads nothing, so rows compare exactly")
    p.add_argument("--max-tokens", type=int, default=2)
    p.add_argument("--num-cpus", type=int, default=0, help="local cluster CPUs (default all)")
    return p.parse_args(argv)


def synthetic_run(folder: Path, users: int, k_neg: int, k_pos: int, seed: int = 0) -> Path:
    """Profiles and candidates of made-up users and films (no data set needed)."""
    from llmhni_local.data.dataset import Interactions
    from llmhni_local.llmhni.candidates import CANDIDATES_FILE, save_candidates, select_candidates
    from llmhni_local.text.profiles import make_profiles, save_profiles

    rng = np.random.default_rng(seed)
    n_items = 40
    pairs = [(u, int(i)) for u in range(users) for i in rng.choice(n_items, 8, replace=False)]
    genres = ["Drama", "Comedy", "Action, Thriller", "Animation", "Sci-Fi"]
    data = Interactions(
        name="synthetic", n_users=users, n_items=n_items, train=np.array(pairs),
        val=np.zeros((0, 2), dtype=np.int64), test=np.zeros((0, 2), dtype=np.int64),
        train_rating=rng.integers(1, 6, len(pairs)).astype(np.float32),
        user_meta=[{"age": str(20 + u % 40), "occupation": "writer"} for u in range(users)],
        item_meta=[{"title": f"Film {i}", "year": str(1970 + i), "genres": genres[i % 5]}
                   for i in range(n_items)])
    save_profiles(folder, make_profiles(data))
    scores = rng.normal(size=(users, n_items))
    cands = select_candidates(lambda u: scores[u], data.user_item_lists("train"), n_items,
                              k_neg=k_neg, k_pos=k_pos, budget=0, seed=seed)
    save_candidates(folder / CANDIDATES_FILE, cands)
    return folder


def _backend(settings):
    from llmhni_local.backends import make_rating_backend

    return make_rating_backend(settings)


def _rows(run: Path):
    from llmhni_local.judgments.store import JudgmentStore

    with JudgmentStore(run, create=False) as s:
        return s.frame().drop(columns=["created_at"]).reset_index(drop=True)


def main(args: argparse.Namespace) -> dict:
    from llmhni_local.backends import ray_cluster
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import checked_rater_id, rate_candidates

    tmp = Path(tempfile.mkdtemp(prefix="rating_scale_"))
    model = args.model
    if model == "tiny":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "llm"))
        from tiny import build_tiny_llama

        model = str(build_tiny_llama(tmp / "tiny"))
    rater = RaterSettings(backend=args.backend, model=model, dtype="float32",
                          max_tokens=args.max_tokens, batch_size=args.rater_batch_size)
    mid, adapter = checked_rater_id(rater)
    base = synthetic_run(tmp / "base", args.users, args.k_neg, args.k_pos)
    runs = {e: shutil.copytree(base, tmp / e) for e in ("inprocess", "ray")}
    factory = functools.partial(_backend, rater)
    times, reports = {}, {}
    t = time.perf_counter()
    ray_cluster.connect(num_cpus=args.num_cpus or None)
    cluster_s = time.perf_counter() - t
    workers, resources = ray_cluster.worker_layout()
    for engine in ("inprocess", "ray"):
        settings = RateSettings(batch_size=args.batch_size, max_failure_share=1.0,
                                engine=engine)
        t = time.perf_counter()
        reports[engine] = rate_candidates(runs[engine], factory, model_id=mid, adapter=adapter,
                                          settings=settings, progress=False)
        times[engine] = time.perf_counter() - t
    import ray

    ray.shutdown()
    a, b = _rows(runs["inprocess"]), _rows(runs["ray"])
    probs = ["p_high", "p_medium", "p_low", "label_mass"]
    same_keys = len(a) == len(b) and a.iloc[:, :6].equals(b.iloc[:, :6])
    diff = (float(np.nanmax(np.abs(a[probs].to_numpy(float) - b[probs].to_numpy(float))))
            if same_keys and len(a) else float("nan"))
    n = reports["inprocess"].rated
    out = {"bench": "rating_scale", "model": args.model, "model_id": mid,
           "backend": args.backend, "judgments": n, "ray_judgments": reports["ray"].rated,
           "rate_batch_size": args.batch_size, "rater_batch_size": args.rater_batch_size,
           "ray_workers": workers, "ray_worker_resources": resources,
           "inprocess_s": times["inprocess"], "ray_cluster_start_s": cluster_s,
           "ray_job_s": times["ray"], "overhead_ratio": times["ray"] / times["inprocess"],
           "overhead_ratio_with_start": (times["ray"] + cluster_s) / times["inprocess"],
           "identical_rows": bool(same_keys and a.equals(b)),
           "same_labels": bool(same_keys and a["label"].equals(b["label"])),
           "max_abs_prob_diff": diff}
    print_table(["path", "judgments", "seconds", "judgments/s"], [
        ["in process", n, times["inprocess"], n / times["inprocess"]],
        ["Ray job", reports["ray"].rated, times["ray"], reports["ray"].rated / times["ray"]],
        ["Ray local cluster start", "", cluster_s, ""]],
        title=f"rating_scale: {args.model} ({args.backend}), {workers} Ray worker(s) "
              f"{resources}")
    print(f"identical rows: {out['identical_rows']}  (max |prob diff| {diff:.3g}); "
          f"Ray overhead x{out['overhead_ratio']:.2f} "
          f"(x{out['overhead_ratio_with_start']:.2f} with the cluster start)")
    shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    emit_json(main(parse_args()))
