"""LLMHNI end to end on MovieLens-100K with a simulated rater instead of an LLM.

The simulated rater reads the ground-truth noise flags (ratings <= 2) of the candidate pairs
and errs at a set rate, so the whole pipeline runs without a language model: data, profiles,
embeddings, alignment, the pretrained recommender, candidates, verdicts, training of each
method, evaluation. Its results are marked SIMULATED in the run folder. This is what
`python cli.py run --config configs/ml100k.toml --set pipeline.rater=simulated` does.

Run it:

    python examples/llmhni_simulated.py                               # the demo's settings
    python examples/llmhni_simulated.py --max-users 100 --epochs 5    # a few minutes
    python examples/llmhni_simulated.py --error 0.3 --methods bpr,tce,llmhni,oracle
    python examples/llmhni_simulated.py --data files:my_folder --epochs 5   # needs ratings
"""

import argparse
import json
import tempfile

from llmhni_local.pipeline.runner import run_pipeline
from llmhni_local.stages.settings import load_run_config


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/ml100k.toml", help="TOML settings file")
    p.add_argument("--data", default="ml100k", help="ml100k, or files:PATH with ratings")
    p.add_argument("--max-users", type=int, default=0, help="keep the first N users (0: all)")
    p.add_argument("--epochs", type=int, default=None, help="most epochs per training run")
    p.add_argument("--methods", default="bpr,llmhni,oracle", help="comma-separated")
    p.add_argument("--error", type=float, default=0.1, help="share of wrong verdicts")
    p.add_argument("--embedder-backend", default="sentence-transformers",
                   help="sentence-transformers (quick to start) or vllm (the demo's)")
    p.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    return p.parse_args()


def main(args: argparse.Namespace) -> None:
    overrides = {
        "pipeline.out": args.out or tempfile.mkdtemp(prefix="llmhni-sim-"),
        "pipeline.rater": "simulated", "pipeline.simulated_error": args.error,
        "pipeline.methods": args.methods.split(","), "tune.kind": "none",
        "data.source": args.data, "data.max_users": args.max_users,
        "embedder.backend": args.embedder_backend,
    }
    if args.epochs is not None:  # a short schedule: validate every epoch, stop early
        overrides.update({"train.epochs": args.epochs, "train.eval_every": 1,
                          "train.min_epochs": 1, "train.patience": 1,
                          "llmhni.align.epochs": args.epochs})
    cfg = load_run_config(args.config, overrides)  # defaults < file < overrides
    run = run_pipeline(cfg, progress=False, log=print)

    results = json.loads((run.dir / "results.json").read_text())
    print(f"\nclean-test ranking (SIMULATED rater, error {args.error}), run folder {run.dir}")
    print(f"{'method':<10} {'Recall@20':>9} {'NDCG@20':>9}")
    for name, r in results["methods"].items():
        print(f"{name:<10} {r['recall@20_mean']:>9.4f} {r['ndcg@20_mean']:>9.4f}")


if __name__ == "__main__":
    main(parse_args())
