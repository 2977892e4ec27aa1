"""LoRA fine-tuning loop: seconds per training example and the final loss, one run per process.

Tunes a LoRA adapter (``llmhni_local.tune.finetune.finetune``) on a random Llama (the tests'
tiny one: 2 layers, hidden 256, a ~600-token BPE vocabulary; ``--layers``/``--hidden`` make a
bigger one) with synthetic profiles and seeded random labels, and prints the time per training
example (the epochs' wall time less the validation passes inside them, over examples x
epochs), the whole call's wall time (model load, frozen-layer cache, checkpoints and the
adapter save included) and the final training and validation losses.

``--root`` imports ``llmhni_local`` from another checkout, so two versions of the loop can be
timed on the same data and seed, e.g. the hand-rolled loop before the move to transformers'
``Trainer`` against the current one::

    mkdir /tmp/old && git archive 2a0943c llmhni_local prompts pyproject.toml \
        | tar -x -C /tmp/old                                   # the hand-rolled loop
    python bench/finetune_loop.py --root /tmp/old | tail -n 1
    python bench/finetune_loop.py | tail -n 1                         # this checkout

Run each one more than once on a shared machine; ``--threads`` (default 1) fixes torch's CPU
threads so load from other processes moves the figures less.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, emit_json


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(REPO_ROOT), help="checkout to import llmhni_local from")
    p.add_argument("--users", type=int, default=40, help="synthetic users (8 labelled pairs each)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--layers", type=int, default=2, help="decoder layers of the random Llama")
    p.add_argument("--hidden", type=int, default=256, help="hidden size of the random Llama")
    p.add_argument("--last-layers", type=int, default=1, help="finetune.last_layers")
    p.add_argument("--threads", type=int, default=1, help="finetune.threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def build_model(folder: Path, layers: int, hidden: int) -> Path:
    """The tests' tiny Llama (``tests/helpers/tiny.py``), resized."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = importlib.util.spec_from_file_location(
        "tiny_helpers", REPO_ROOT / "tests" / "helpers" / "tiny.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    tiny.build_tiny_llama(folder)
    if (layers, hidden) != (2, 256):
        cfg = LlamaConfig.from_pretrained(str(folder))
        cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size = layers, hidden, 2 * hidden
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(str(folder))
    return folder


def synthetic(n_users: int, seed: int):
    """Profiles of ``n_users`` users x 8 rated items, and a random label for each pair."""
    import numpy as np
    import pandas as pd

    from llmhni_local.data.dataset import Interactions
    from llmhni_local.text.profiles import make_profiles

    rng = np.random.default_rng(seed)
    n_items = 48
    pairs = [(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, 8, replace=False)]
    genres = ["Drama", "Comedy", "Action, Thriller", "Animation"]
    data = Interactions(
        name="synth", n_users=n_users, n_items=n_items, train=np.array(pairs),
        val=np.zeros((0, 2), dtype=np.int64), test=np.zeros((0, 2), dtype=np.int64),
        train_rating=rng.integers(1, 6, len(pairs)).astype(np.float32),
        user_meta=[{"age": str(20 + u % 40), "occupation": "student"} for u in range(n_users)],
        item_meta=[{"title": f"Film {i}", "year": str(1980 + i), "genres": genres[i % 4]}
                   for i in range(n_items)])
    labels = pd.DataFrame({"user": [u for u, _ in pairs], "item": [i for _, i in pairs],
                           "label": rng.choice(["High", "Medium", "Low"], len(pairs))})
    return make_profiles(data), labels


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(Path(args.root).resolve()))
    import llmhni_local
    import llmhni_local.tune.finetune as ft

    # validation passes are timed apart, so the per-example figure is the training steps alone
    runner_mod = sys.modules["llmhni_local.tune.finetune_runner"]
    spent: list[float] = []
    evaluate = runner_mod.evaluate_examples

    def timed(*a, **kw):
        t0 = time.perf_counter()
        out = evaluate(*a, **kw)
        spent.append(time.perf_counter() - t0)
        return out

    for name in ("llmhni_local.tune.finetune", "llmhni_local.tune.finetune_trainer"):
        if name in sys.modules and hasattr(sys.modules[name], "evaluate_examples"):
            sys.modules[name].evaluate_examples = timed

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "model", args.layers, args.hidden)
        profiles, labels = synthetic(args.users, args.seed)
        settings = ft.FinetuneSettings(
            base=str(model), epochs=args.epochs, batch_size=args.batch_size,
            last_layers=args.last_layers, val_share=0.25, min_val_users=2, lr=5e-3,
            threads=args.threads, seed=args.seed)
        t0 = time.perf_counter()
        card = ft.finetune(profiles, labels, Path(tmp) / "adapter", settings, progress=False,
                           log=lambda _: None)
        wall = time.perf_counter() - t0
    history = card["history"]
    epochs = [h for h in history if h["epoch"] > 0]
    in_epochs = spent[-len(epochs):] if card["split"]["val_pairs"] else []
    n = card["training"]["examples_per_epoch"]
    train_s = sum(h["seconds"] for h in epochs) - sum(in_epochs)
    result = {"root": str(Path(args.root).resolve()), "package": llmhni_local.__file__,
              "examples_per_epoch": n, "epochs": len(epochs), "threads": args.threads,
              "layers": args.layers, "hidden": args.hidden,
              "seconds_per_example": train_s / (n * len(epochs)), "wall_seconds": wall,
              "final_train_loss": epochs[-1]["train_loss"],
              "final_val_loss": epochs[-1].get("val", {}).get("loss"),
              "train_loss_by_epoch": [h["train_loss"] for h in epochs]}
    print(f"{n} examples x {len(epochs)} epochs: {result['seconds_per_example'] * 1e3:.1f} ms "
          f"per example, wall {wall:.1f} s, final train loss {result['final_train_loss']:.4f}, "
          f"validation loss {result['final_val_loss']:.4f}")
    emit_json(result)


if __name__ == "__main__":
    main()
