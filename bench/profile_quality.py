"""How does LLMHNI degrade as the text profiles get worse? A curve over the share of profiles
given another entity's text, with the verdicts held fixed (docs/DESIGN.md, "Profile quality").

1. A base run (``OUT/base``, the demo config: MovieLens-100K as given, the local reader) gets
   its verdicts from the clean profiles; they are written as a verdicts file in raw ids.
2. For each share s, ``profiles.shuffle_share = s`` gives s of the user profiles and s of the
   item profiles another random entity's text; the profiles are embedded and aligned again,
   and ``llmhni`` and ``llmhni-dns`` (DNS negatives: no similarity test) train with the base
   verdicts brought in through ``verdicts.file``, so G' is the same at every share and the
   curve isolates the semantic half (negatives and alignment). One folder ``OUT/cells``; every
   finished training (with its false-negative count) is a line of
   ``bench/records/profile_quality.jsonl`` (``--records``; bench/_records.py), in the
   repository, so a killed bench picks up where it stopped, on any machine.
3. At share 0 (the clean profiles) two more rows train on the same verdicts, for **the text's
   share**: ``llmhni-no-semneg`` (uniform negatives) and ``dns`` (BPR with DNS negatives, no
   verdicts). LLMHNI minus ``llmhni-dns`` is what the similarity test adds over hard-negative
   mining; each row against ``llmhni`` is a paired difference over the same seeds and test
   users with a 95% bootstrap interval.

Reported per share and method (mean ± std over seeds): clean-test Recall@20, and a check of the
semantic negatives' false negatives. Under the trained model, for a sample of 20,000 training
pairs, a pool of ``llmhni.pool_size`` uniform negatives is drawn and the method's own rule
chooses one (``LLMHNIObjective.choose_negatives``); the share of chosen negatives that are the
user's validation or test items (``false negatives used``, the harm hard negatives do) and,
for ``llmhni``, the share of the candidates it skipped for their similarity that are
(``skipped held-out``: what the similarity test saves) are counted. The held-out items are read
only for this count, after training. Writes docs/BENCHMARKS.md (between markers) and
docs/profile_quality.png; ends with one JSON line.

    python bench/profile_quality.py --quick   # shares 0 and 1, 1 seed
    python bench/profile_quality.py           # shares 0, 0.25, 0.5, 0.75, 1; 3 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _common import (
    REPO_ROOT,
    add_pipeline_args,
    check_jobs,
    ci_cell,
    emit_json,
    fail,
    float_list,
    format_table,
    mean_pm,
    paired,
    per_user,
    pipeline_settings,
    print_table,
    run_main,
    write_docs_block,
)
from _records import Records, add_records_arg, record_key, records_path

SHARES = "0,0.25,0.5,0.75,1"
METHODS = ("llmhni", "llmhni-dns")
#: The text's share, on the clean profiles (share 0) with the same verdicts: LLMHNI, its DNS
#: negatives (no similarity test), its uniform negatives, and BPR with DNS (no LLMHNI at all).
TEXT_SHARE = ("llmhni", "llmhni-dns", "llmhni-no-semneg", "dns")
AUDIT_PAIRS = 20000
RECORDS = REPO_ROOT / "bench" / "records" / "profile_quality.jsonl"
#: Seconds of one LLMHNI training (comparison bench, 2 cores), of a share's profiles, embed and
#: align stages, and of the base run (1,000 readings and Rec_pre).
TRAIN_S, SHARE_S, BASE_S = 110, 90, 420


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shares 0 and 1, 1 seed")
    p.add_argument("--shares", default=None, help=f"shares of profiles replaced (default {SHARES})")
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default 3; 1 quick)")
    add_records_arg(p, RECORDS)
    add_pipeline_args(p, "bench-profile-quality")
    a = p.parse_args(argv)
    a.records = records_path(a, RECORDS)
    a.seeds = a.seeds if a.seeds is not None else (1 if a.quick else 3)
    if a.seeds < 1:
        fail(f"--seeds must be >= 1, got {a.seeds}")
    a.shares = float_list("--shares", a.shares or ("0,1" if a.quick else SHARES), lo=0, hi=1)
    check_jobs(a.jobs)
    return a


def estimate_s(args) -> float:
    trainings = (len(args.shares) * len(METHODS)
                 + (len(TEXT_SHARE) - len(METHODS)) * (0.0 in args.shares)) * args.seeds
    return BASE_S + len(args.shares) * SHARE_S + trainings * TRAIN_S / min(args.jobs,
                                                                           os.cpu_count() or 1)




def base_verdicts(args, base: dict) -> Path:
    """The clean profiles' verdicts (the config's reader), as a verdicts file in raw ids."""
    from llmhni_local.core.io import atomic_path
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.methods import verdict_table
    from llmhni_local.stages.settings import load_run_config

    cfg = load_run_config(None, {**base, "pipeline.out": str(Path(args.out) / "base"),
                                 "pipeline.methods": ["bpr"], "pipeline.seeds": [0]})
    run = run_pipeline(cfg, progress=False, log=lambda m: print("   ", m, flush=True))
    v, data = verdict_table(run), run.data
    text = "user,item,verdict\n" + "".join(
        f"{data.user_ids[u]},{data.item_ids[i]},{d}\n"
        for u, i, d in zip(v["user"], v["item"], v["verdict"]))
    path = Path(args.out) / "files" / "clean_verdicts.csv"
    if not (path.is_file() and path.read_text() == text):  # same bytes, same key downstream
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
    return path


def false_negatives(run, method: str, seed: int, n_pairs: int = AUDIT_PAIRS) -> dict:
    """Shares of held-out items among the negatives ``method``'s rule chooses, and among the
    candidates it skips, under its trained model (see the module docstring)."""
    import torch

    from llmhni_local.stages.methods import METHOD_TABLE, method_train_settings
    from llmhni_local.train.run import load_trained

    data = run.data
    cfg = run.cfg.train_config()
    cfg = type(cfg)(data=cfg.data, model=cfg.model, eval=cfg.eval,
                    train=method_train_settings(run, method, seed))
    built = METHOD_TABLE[method].build(run, method, cfg)
    obj, sampler = built["objective"], built["sampler"]
    model = load_trained(run.dir / "train" / method / f"seed{seed}", data)
    rng = np.random.default_rng(seed)
    pairs = data.train[rng.choice(len(data.train), size=min(n_pairs, len(data.train)),
                                  replace=False)]
    users = pairs[:, 0].astype(np.int64)
    pool = sampler.sample(users, rng)
    with torch.no_grad():
        u_emb, i_emb = model(obj.eval_adj())
        neg, sel = obj.choose_negatives(torch.as_tensor(users), torch.as_tensor(pool), i_emb,
                                        u_emb)
    m = np.int64(data.n_items)
    held = np.concatenate([data.val, data.test]).astype(np.int64)
    held = held[:, 0] * m + held[:, 1]
    chosen_held = np.isin(users * m + neg.numpy(), held)
    out = {"false_negatives_used": float(chosen_held.mean())}
    if sel is not None:
        flagged = sel.flagged.numpy()
        codes = users[:, None] * m + pool
        skipped = np.isin(codes[flagged], held)
        out["skipped_held_out"] = float(skipped.mean()) if flagged.any() else float("nan")
        out["skipped_per_pair"] = float(flagged.sum(1).mean())
    return out


def run_all(args) -> dict:
    from llmhni_local.core.io import sha256_file
    from llmhni_local.core.progress import progress_bar

    base = pipeline_settings(args)
    records = Records(args.records)
    print(f"profile quality: {len(records)} trainings already in {args.records}", flush=True)
    print("== base: verdicts from the clean profiles", flush=True)
    path = base_verdicts(args, base)
    results: dict = {}
    with progress_bar("profile quality", len(args.shares)) as bar:
        for share in args.shares:
            print(f"== share {share:g} of the profiles replaced", flush=True)
            methods = TEXT_SHARE if share == 0 else METHODS
            settings = {**base, "profiles.shuffle_share": share,
                        "verdicts.source": "the config's reader on clean profiles"}
            # keyed by the verdicts' bytes, not by where the file lies
            keyed = {**settings, "verdicts.file": "sha256:" + sha256_file(path)}
            keys = {(m, s): record_key(keyed, m, s) for m in methods for s in range(args.seeds)}
            missing = [m for m in methods
                       if any(records.get(keys[m, s]) is None for s in range(args.seeds))]
            if missing:
                run = run_share(args, {**settings, "verdicts.file": str(path)}, missing)
                for method in missing:
                    for seed in range(args.seeds):
                        folder = run.dir / "train" / method / f"seed{seed}"
                        met = json.loads((folder / "metrics.json").read_text())
                        audit = false_negatives(run, method, seed) if method in METHODS else {}
                        records.add(keys[method, seed],
                                    {"share": share, "method": method, "seed": seed},
                                    {"seed": seed, "recall@20": met["test"]["recall@20"],
                                     "per_user": per_user(folder), **audit})
            for method in methods:
                results[(share, method)] = [records.get(keys[method, s])
                                            for s in range(args.seeds)]
            bar.advance(1)
    return results


def run_share(args, settings: dict, methods: list[str]):
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.settings import load_run_config

    cfg = load_run_config(None, {**settings, "pipeline.out": str(Path(args.out) / "cells"),
                                 "pipeline.methods": list(methods),
                                 "pipeline.seeds": list(range(args.seeds))})
    return run_pipeline(cfg, progress=False, log=lambda m: print("   ", m, flush=True))


FIELDS = ("recall@20", "false_negatives_used", "skipped_held_out", "skipped_per_pair")


def table(results: dict) -> list[list]:
    return [[f"{share:.0%}", method] + [mean_pm([s.get(f, np.nan) for s in seeds])
                                          for f in FIELDS]
            for (share, method), seeds in results.items() if method in METHODS]


def share_table(results: dict) -> list[list]:
    """The text's share: each row of :data:`TEXT_SHARE` at share 0 against ``llmhni``."""
    ref = results[(0.0, "llmhni")]
    return [[method, mean_pm([s["recall@20"] for s in results[(0.0, method)]]),
             "-" if method == "llmhni" else ci_cell(paired(results[(0.0, method)], ref,
                                                           f"{method} and llmhni"))]
            for method in TEXT_SHARE if (0.0, method) in results]


def plot(results: dict, shares: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    x = [100 * s for s in shares]
    for method, style in zip(METHODS, ("-", "--")):
        seeds = [results[(s, method)] for s in shares]
        mean = [np.mean([r["recall@20"] for r in ss]) for ss in seeds]
        std = [np.std([r["recall@20"] for r in ss], ddof=1) if len(ss) > 1 else 0 for ss in seeds]
        a.errorbar(x, mean, yerr=std, fmt="o" + style, color="black", capsize=3, label=method)
        b.plot(x, [np.mean([r["false_negatives_used"] for r in ss]) for ss in seeds],
               "o" + style, color="tab:red", label=f"held-out among chosen, {method}")
        if method == "llmhni":
            b.plot(x, [np.nanmean([r.get("skipped_held_out", np.nan) for r in ss]) for ss in seeds],
                   "s" + style, color="tab:blue", label="held-out among skipped, llmhni")
    a.set_xlabel("profiles given another entity's text (%)")
    a.set_ylabel("test Recall@20")
    b.set_xlabel("profiles given another entity's text (%)")
    b.set_ylabel("share of negatives that are held-out items")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args) -> dict:
    est = estimate_s(args)
    print(f"profile quality: {len(args.shares)} shares x {len(METHODS)} methods x {args.seeds} "
          f"seeds; estimated {est / 60:.0f} min on a 2-core CPU if nothing is reused", flush=True)
    if args.estimate:
        return {"estimate_s": est}
    t0 = time.perf_counter()
    results = run_all(args)
    seconds = time.perf_counter() - t0
    headers = ["replaced", "method", "Recall@20", "held-out among chosen",
               "held-out among skipped", "skipped per pair"]
    rows = table(results)
    title = "Profiles given another entity's text, verdicts held fixed"
    print_table(headers, rows, title)
    share_headers = ["method (clean profiles, same verdicts)", "Recall@20",
                     "vs llmhni: diff [95% CI]"]
    shares = share_table(results) if (0.0, "llmhni") in results else []
    if shares:
        print_table(share_headers, shares, "The text's share")
    figures = {f"{s:g}/{m}/{f}": float(np.nanmean([r.get(f, np.nan) for r in seeds]))
               for (s, m), seeds in results.items() for f in FIELDS
               if any(f in r for r in seeds)}
    figures.update({f"text_share/{row[0]}": row[2] for row in shares})
    if not args.no_docs:
        docs = REPO_ROOT / "docs"
        plot(results, args.shares, docs / "profile_quality.png")
        cmd = "python bench/profile_quality.py" + (" --quick" if args.quick else "")
        write_docs_block("profile_quality.py", (
            f"## Profile quality (`{cmd}`)\n\nMeasured {time.strftime('%Y-%m-%d')} in "
            f"{seconds / 60:.0f} minutes on {os.cpu_count()} CPU cores: MovieLens-100K as given, "
            f"LightGCN, {args.seeds} seed(s); verdicts of the config's reader on the clean "
            "profiles at every share. " + title + "; the held-out shares count, after "
            f"training, {AUDIT_PAIRS:,} training pairs' pools under the trained model.\n\n"
            + format_table(headers, rows) + "\n\n![profile quality](profile_quality.png)\n"
            + ("\n### The text's share\n\nOn the clean profiles with the same verdicts: "
               "`llmhni-dns` takes the pool's highest-scoring candidate (no similarity test), "
               "`llmhni-no-semneg` a uniform one, `dns` is BPR with DNS negatives. LLMHNI minus "
               "`llmhni-dns` is what the text's similarity test adds over hard-negative mining "
               "(paired over seeds and test users, 95% bootstrap interval).\n\n"
               + format_table(share_headers, shares) + "\n" if shares else "")))
    result = {"bench": "profile_quality", "seeds": args.seeds, "seconds": seconds, **figures}
    emit_json(result)
    return result


if __name__ == "__main__":
    run_main(lambda: main(parse_args()))
