"""Rater quality on MovieLens-100K: baselines, zero-shot SmolLM2-135M and LoRA-tuned SmolLM2.

Audit labels are SIMULATED from MovieLens-100K training ratings (>= 4 High, 3 Medium, <= 2
Low; ``llmhni_local.audit.simulated_audits``). Users are split once (seeded): 20% are
evaluation users, the rest tuning users, so every held-out pair belongs to a user no adapter saw (held out by
user, hence also by pair). Then:

1. ``--eval-pairs`` training pairs of evaluation users are the held-out audited pairs; they are
   the "candidates" of an evaluation run folder (``WORK/eval``) and rated there, in both views,
   by every LLM rater through the toolkit's own rating stage (judgments of base and tuned
   raters side by side in one store), then scored by the toolkit's ``audit report`` code;
2. raters: the majority label of the tuning labels; two supervised references without an LLM
   (logistic regression on the tuning labels over log item popularity, log user activity and
   the two similarities below; then also over the item's and user's mean training ratings,
   the pair's own left out, which no prompt shows: how much simple signals explain at all);
   an embedding-similarity rater
   (all-MiniLM-L6-v2 cosine of user and item profiles for the user view, mean cosine of the
   liked items and the item for the item view; two thresholds set on the tuning pairs so the
   predicted label shares match the tuning labels'); zero-shot SmolLM2-135M; SmolLM2-135M with a
   LoRA adapter tuned (``llmhni_local.tune.finetune``) on N labels of tuning users, N in
   ``--labels`` (nested samples: the 250 are among the 500, ...);
3. for each: kappa and linear-weighted kappa per view and for the combined verdict (hard iff
   both views say High; audit High = hard), and the fine-tuning wall time;
4. unless ``--no-recall``: the pipeline (``configs/ml100k.toml``, methods bpr and llmhni) with
   the zero-shot rater and with the largest-N adapter; clean-test Recall@20 of LLMHNI for each.
   The tuning labels then leave out every candidate pair of that run, so the tuned rater never
   judges a pair it was trained on.

Targets on 2 CPU cores (issue 5): tuned kappa >= zero-shot + 0.2; tuning on 1,000 labels in
<= 15 minutes. Needs ``python cli.py models prepare smollm2``.

    python bench/rater_quality.py --quick        # N = 250, 100 held-out pairs, no recall
    python bench/rater_quality.py                # N = 250, 500, 1000; 300 pairs; recall
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, emit_json, print_table

LABELS = ("High", "Medium", "Low")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", default=None, help="comma-separated N (default 250,500,1000; "
                                                  "--quick: 250)")
    p.add_argument("--quick", action="store_true", help="N = 250, 100 held-out pairs, no recall")
    p.add_argument("--eval-pairs", type=int, default=None, help="held-out audited pairs "
                                                                "(default 300; --quick 100)")
    p.add_argument("--eval-users", type=float, default=0.2, help="share of users held out")
    p.add_argument("--backend", default="vllm", choices=["vllm", "transformers"],
                   help="rating backend (default vllm)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="rating dtype (bfloat16 only pays with AVX-512 BF16 / AMX)")
    p.add_argument("--finetune-config", default=str(REPO_ROOT / "configs" / "finetune.toml"))
    p.add_argument("--epochs", type=int, default=None, help="override finetune.epochs")
    p.add_argument("--lr", type=float, default=None, help="override finetune.lr")
    p.add_argument("--last-layers", type=int, default=None, help="override finetune.last_layers")
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "ml100k.toml"),
                   help="pipeline settings for the recall part")
    p.add_argument("--no-recall", action="store_true", help="skip the LLMHNI recall part")
    p.add_argument("--no-tuned-recall", action="store_true",
                   help="run the zero-shot pipeline (its candidates stay out of the tuning "
                        "labels, as in a full run) but not the one with the tuned rater: "
                        "rating through a LoRA adapter is slow on a CPU")
    p.add_argument("--probe-only", action="store_true",
                   help="only the probe rows (and the label-free baselines): no LLM rating, "
                        "no LoRA, no recall")
    p.add_argument("--synthetic-pairs", type=int, default=300,
                   help="random never-seen pairs of evaluation users (synthetic noise)")
    p.add_argument("--work", default=str(REPO_ROOT / "runs" / "bench-rater-quality"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete WORK first")
    args = p.parse_args(argv)
    if args.labels is None:
        args.labels = "250" if args.quick else "250,500,1000"
    args.sizes = sorted({int(x) for x in args.labels.split(",") if x.strip()})
    if args.eval_pairs is None:
        args.eval_pairs = 100 if args.quick else 300
    if args.quick or args.probe_only:
        args.no_recall = True
    return args


# ---------------------------------------------------------------------------- data
def split_users(n_users: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n_users)
    k = int(round(share * n_users))
    return np.sort(perm[:k]), np.sort(perm[k:])


def sample_pairs(data, users: np.ndarray, n: int, seed: int, exclude=frozenset()):
    """A label frame of n training pairs of ``users`` (labels from ratings), not in exclude."""
    import pandas as pd

    from llmhni_local.audit.simulated_audits import ANNOTATOR, label_from_rating

    mask = np.isin(data.train[:, 0], users)
    idx = np.flatnonzero(mask)
    idx = np.array([k for k in idx
                    if (int(data.train[k, 0]), int(data.train[k, 1])) not in exclude])
    order = np.random.default_rng(seed).permutation(len(idx))
    if n > len(idx):
        raise SystemExit(f"error: only {len(idx)} pairs available, {n} asked")
    pick = idx[order[:n]]
    return pd.DataFrame({
        "user": data.train[pick, 0].astype(np.int64), "item": data.train[pick, 1].astype(np.int64),
        "label": [label_from_rating(r) for r in data.train_rating[pick]],
        "annotator": ANNOTATOR, "simulated": True,
        "rating": data.train_rating[pick]})


def eval_run(work: Path, data, profiles, pairs) -> Path:
    """A run folder whose candidates are the held-out pairs, with their audited labels."""
    from llmhni_local.audit.export import write_table
    from llmhni_local.audit.importer import import_labels
    from llmhni_local.audit.records import labels_hash
    from llmhni_local.llmhni.candidates import CANDIDATE_DTYPE, CANDIDATES_FILE, save_candidates
    from llmhni_local.text.profiles import save_profiles

    run = work / "eval"
    key = {"labels": labels_hash(pairs), "profiles": profiles.hash}
    key_file = run / "bench_key.json"
    if key_file.is_file() and json.loads(key_file.read_text()) == key:
        return run  # the same held-out pairs: reused, judgments included
    if run.exists():
        shutil.rmtree(run)
    save_profiles(run, profiles)
    c = np.zeros(len(pairs), dtype=CANDIDATE_DTYPE)
    c["user"], c["item"], c["kind"] = pairs["user"], pairs["item"], "observed"
    order = np.lexsort((c["item"], c["user"]))
    save_candidates(run / CANDIDATES_FILE, c[order])
    cols = ["user", "item", "label", "annotator"]
    import_labels(run, write_table(pairs[cols], run / "heldout_labels.csv"))
    key_file.write_text(json.dumps(key))
    return run


# ---------------------------------------------------------------------------- raters
def embedding_scores(run: Path, profiles, max_liked: int):
    """``score(view, users, items)``: all-MiniLM-L6-v2 cosine of the user and item profiles
    (user view) or mean cosine of the user's liked items and the item (item view)."""
    from llmhni_local.engine.settings import EmbedderSettings
    from llmhni_local.text.embed import embed_profiles, embedder_model_id

    settings = EmbedderSettings(backend="sentence-transformers")
    emb = embed_profiles(run, settings, model_id=embedder_model_id(settings))
    u, i = emb.users, emb.items

    def score(view: str, users, items) -> np.ndarray:
        if view == "user":
            return np.einsum("nd,nd->n", u[users], i[items])
        out = []
        for a, b in zip(users, items):
            liked = [x for x in profiles.liked[a] if x != b][:max_liked]
            out.append(float((i[liked] @ i[b]).mean()) if liked else 0.0)
        return np.asarray(out)

    return score


def embedding_predictions(score, tune, heldout):
    """Per view, labels from the similarity with two thresholds set on the tuning pairs so the
    predicted label shares match the tuning labels'."""
    preds = {}
    for view in ("user", "item"):
        s_tune = score(view, tune["user"].to_numpy(), tune["item"].to_numpy())
        share = {lab: float((tune["label"] == lab).mean()) for lab in LABELS}
        # highest scores High, lowest Low, in the tuning labels' proportions
        hi = np.quantile(s_tune, 1 - share["High"])
        lo = np.quantile(s_tune, share["Low"])
        s = score(view, heldout["user"].to_numpy(), heldout["item"].to_numpy())
        preds[view] = ["High" if x >= hi else ("Low" if x <= lo else "Medium") for x in s]
    return preds


def logistic_predictions(data, score, tune, heldout, seed: int,
                         mean_ratings: bool = False) -> list[str]:
    """A supervised reference on the same tuning labels: class-balanced multinomial logistic
    regression on what implicit feedback and the profiles give (log item popularity and log
    user activity in training, both views' MiniLM similarities). One prediction for both
    views: it has no prompts. ``mean_ratings`` adds the item's and the user's mean training
    rating, each leaving the pair's own rating out: a signal no prompt carries (profiles hold
    implicit feedback), to show how much of the labels simple features can explain at all."""
    import torch

    pop = np.bincount(data.train[:, 1], minlength=data.n_items)
    act = np.bincount(data.train[:, 0], minlength=data.n_users)
    r = data.train_rating
    isum = np.bincount(data.train[:, 1], weights=r, minlength=data.n_items)
    usum = np.bincount(data.train[:, 0], weights=r, minlength=data.n_users)

    def feats(frame) -> np.ndarray:
        u, i = frame["user"].to_numpy(), frame["item"].to_numpy()
        cols = [np.log1p(pop[i]), np.log1p(act[u]), score("user", u, i), score("item", u, i)]
        if mean_ratings:
            own = frame["rating"].to_numpy()
            cols += [(isum[i] - own) / np.maximum(pop[i] - 1, 1),
                     (usum[u] - own) / np.maximum(act[u] - 1, 1)]
        return np.column_stack(cols)

    x_tune, x_held = feats(tune), feats(heldout)
    mu, sd = x_tune.mean(0), x_tune.std(0) + 1e-9
    x = torch.tensor((x_tune - mu) / sd, dtype=torch.float64)
    y = torch.tensor([LABELS.index(v) for v in tune["label"]])
    counts = torch.bincount(y, minlength=3).clamp(min=1).double()
    weight = len(y) / (3 * counts)
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], 3).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y, weight=weight) \
            + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = lin(torch.tensor((x_held - mu) / sd, dtype=torch.float64)).argmax(1)
    return [LABELS[k] for k in pred.tolist()]


def baseline_rows(name: str, truth: list[str], preds: dict[str, list[str]]) -> dict:
    from llmhni_local.audit.agreement import agreement
    from llmhni_local.verdicts.rules import audit_verdict, model_verdict

    out = {v: agreement(truth, preds[v]) for v in ("user", "item")}
    out["verdict"] = agreement([audit_verdict(t) for t in truth],
                               [model_verdict(a, b) for a, b in zip(preds["user"], preds["item"])],
                               ("hard", "noisy"))
    return {"name": name, "views": out}


def rate(run: Path, args, adapter: Path | None, prompts: Path) -> str:
    from llmhni_local.backends import make_rating_backend
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import checked_rater_id, rate_candidates

    settings = RaterSettings(backend=args.backend, model="smollm2", dtype=args.dtype,
                             adapter=str(adapter) if adapter else None)
    mid, aid = checked_rater_id(settings)
    report = rate_candidates(run, lambda: make_rating_backend(settings), model_id=mid,
                             adapter=aid, settings=RateSettings(max_failure_share=1.0),
                             prompts_dir=prompts, progress=False)
    print(f"   rated {report.rated} prompts ({report.failures} not a label) in "
          f"{report.seconds:.0f} s with {mid}", flush=True)
    return mid


def prob_views(run: Path, model_id: str, adapter: str, truth: dict) -> dict:
    """Per view, agreement of the most probable label (of the three label probabilities the
    backend read at the answer position) with the audit: defined even where the answer text
    is not a label (zero-shot SmolLM2 answers "The candidate item is ...")."""
    from llmhni_local.audit.agreement import agreement
    from llmhni_local.judgments.plan import read_rating_manifest
    from llmhni_local.judgments.store import JudgmentStore, Key

    hashes = read_rating_manifest(run)["views"]
    out = {}
    with JudgmentStore(run, create=False) as store:
        for view in ("user", "item"):
            rows = store.frame(Key(model_id, adapter, hashes[view]["prompt_hash"]))
            rows = rows[rows["view"] == view]
            pairs, pred = [], []
            for u, i, a, b, c in zip(rows["user"], rows["item"], rows["p_high"],
                                     rows["p_medium"], rows["p_low"]):
                if (int(u), int(i)) in truth:
                    pairs.append((int(u), int(i)))
                    probs = [a, b, c]
                    pred.append(None if any(x is None or x != x for x in probs)
                                else LABELS[int(np.argmax(probs))])
            out[view] = agreement([truth[p] for p in pairs], pred)
    return out


# ---------------------------------------------------------------------------- probe
def synthetic_pairs(data, users: np.ndarray, n: int, seed: int) -> list[tuple[int, int]]:
    """n random (user, item) pairs of ``users`` seen nowhere in the data (synthetic noise)."""
    seen = {(int(u), int(i)) for part in (data.train, data.val, data.test) for u, i in part}
    rng = np.random.default_rng(seed)
    out: set = set()
    while len(out) < n:
        p = (int(rng.choice(users)), int(rng.integers(data.n_items)))
        if p not in seen:
            out.add(p)
    return sorted(out)


def probe_probs(out: Path, pairs, profiles, prompts: Path, max_liked: int) -> dict:
    """Per view ``(n, 3)`` probabilities of the probe at ``out`` through its rating backend."""
    from llmhni_local.backends import make_rating_backend
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.plan import WorkItem, judge_requests

    templates = load_templates(tuple(VIEW_TEMPLATES.values()), prompts)
    with make_rating_backend(RaterSettings(backend="transformers", model="smollm2",
                                           adapter=str(out))) as backend:
        return {v: backend.head_probs(judge_requests([WorkItem(u, i, v, "") for u, i in pairs],
                                                     profiles, templates, max_liked))
                for v in ("user", "item")}


def memo_probe_probs(out: Path, pairs, profiles, prompts: Path, max_liked: int,
                     memo: dict) -> dict:
    """Per view ``(n, 3)`` probabilities of the probe at ``out``, its heads applied to states
    from ``memo`` (computed once at every candidate layer by the fitting code's own
    ``compute_states``): the nested probes share one hidden-state pass over the held-out pairs."""
    import pandas as pd

    from llmhni_local.tune.probe import ProbeSettings, compute_states, prepare_inputs
    from llmhni_local.weights.probe import load_probe

    settings = ProbeSettings()
    inputs = prepare_inputs(profiles, pd.DataFrame(pairs, columns=["user", "item"]), settings,
                            max_liked, prompts_dir=prompts)
    card, heads = load_probe(out)
    states, layers, _ = compute_states(inputs, settings, card["dtype"], memo)
    return {v: heads[v][1].probs(states[v][:, layers.index(heads[v][0])]) for v in ("user", "item")}


def probe_rows(args, data, profiles, pool, heldout, eval_users, prompts: Path,
               max_liked: int) -> list[dict]:
    """Probe at every label count: per view natural-noise AUC (audited Low = rated <= 2 among
    held-out pairs), synthetic-noise AUC (random never-seen pairs against the held-out
    pairs), 3-class and verdict kappa, tuning seconds. Largest set first, on its own; the
    smaller nested sets take its states from memory (marked *). Held-out states are computed
    once; the largest probe is also run through its rating backend on the held-out pairs, and
    the largest gap between the two routes is reported (``backend_max_abs_dp``)."""
    from llmhni_local.eval.stats import auc
    from llmhni_local.tune.probe import ProbeSettings, fit_probe
    from llmhni_local.tune.probe_head import noise_score

    held = list(zip(heldout["user"].tolist(), heldout["item"].tolist()))
    fake = synthetic_pairs(data, eval_users, args.synthetic_pairs, args.seed + 3)
    truth = heldout["label"].tolist()
    memo: dict = {}
    rows = []
    for n in sorted(args.sizes, reverse=True):
        out = Path(args.work) / "adapters" / f"ml100k-sim-probe-{n}"
        print(f"[p] probe on {n} simulated labels -> {out}", flush=True)
        card = fit_probe(profiles, pool.iloc[:n], out, ProbeSettings(), prompts_dir=prompts,
                         max_liked=max_liked, force=True, state_memo=memo,
                         log=lambda m: print("   ", m, flush=True))
        t0 = time.perf_counter()
        p_held = memo_probe_probs(out, held, profiles, prompts, max_liked, memo)
        p_fake = memo_probe_probs(out, fake, profiles, prompts, max_liked, memo)
        eval_s = time.perf_counter() - t0
        preds = {v: [LABELS[k] for k in p_held[v].argmax(1)] for v in ("user", "item")}
        row = baseline_rows(f"probe ({n} labels)" + ("*" if card["timing"]["states_reused"]
                                                     else ""), truth, preds)
        if not rows:
            t0 = time.perf_counter()
            via = probe_probs(out, held, profiles, prompts, max_liked)
            row["backend_s_per_prompt"] = (time.perf_counter() - t0) / (2 * len(held))
            row["backend_max_abs_dp"] = max(float(np.abs(via[v] - p_held[v]).max())
                                            for v in ("user", "item"))
            print(f"    rating backend on the held-out pairs: max |dp| against the shared "
                  f"states {row['backend_max_abs_dp']:.2g}, "
                  f"{row['backend_s_per_prompt']:.3f} s per prompt", flush=True)
        low = np.array([t == "Low" for t in truth])
        for v in ("user", "item"):
            row["views"][v]["auc_natural"] = auc(noise_score(p_held[v]), low)
            row["views"][v]["auc_synthetic"] = auc(
                np.r_[noise_score(p_held[v]), noise_score(p_fake[v])],
                np.r_[np.zeros(len(held), bool), np.ones(len(fake), bool)])
        row.update(n=n, finetune_s=card["timing"]["wall_seconds"],
                   states_s=card["timing"]["states_seconds"], eval_states_s=eval_s,
                   layers={v: card["heads"][v]["layer"] for v in ("user", "item")})
        rows.append(row)
    return sorted(rows, key=lambda r: r["n"])


# ---------------------------------------------------------------------------- recall
def pipeline_recall(args, adapter: Path | None) -> tuple[float, Path]:
    from llmhni_local.core.config import read_toml
    from llmhni_local.pipeline.runner import run_pipeline
    from llmhni_local.stages.settings import load_run_config

    base = {f"{t}.{k}": v for t, table in read_toml(args.config).items()
            for k, v in table.items()}
    out = Path(args.work) / "pipeline"
    cfg = load_run_config(None, {**base, "pipeline.out": str(out),
                                 "pipeline.methods": ["bpr", "llmhni"],
                                 "rater.backend": args.backend, "rater.dtype": args.dtype,
                                 "rater.adapter": str(adapter) if adapter else None,
                                 "tune.kind": "none"})  # this bench's adapters, not the demo's
    run = run_pipeline(cfg, progress=False, log=lambda m: print("   ", m, flush=True))
    results = json.loads((run.dir / "results.json").read_text())["methods"]
    return float(results["llmhni"]["recall@20_mean"]), run.dir


# ---------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> dict:
    from llmhni_local.audit.report import evaluate
    from llmhni_local.core.offline import enforce_offline
    from llmhni_local.data.movielens import load_ml100k
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
    from llmhni_local.text.profiles import make_profiles
    from llmhni_local.tune.finetune import finetune, load_finetune_settings

    enforce_offline()
    work = Path(args.work)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    # The templates are copied once per bench run: tuning and every rating use the same ones
    # even if prompts/ is edited meanwhile.
    prompts = work / "prompts"
    shutil.rmtree(prompts, ignore_errors=True)
    shutil.copytree(REPO_ROOT / "prompts", prompts)
    t_start = time.perf_counter()
    result: dict = {"bench": "rater_quality", "simulated_labels": True, "sizes": args.sizes,
                    "eval_pairs": args.eval_pairs, "backend": args.backend, "dtype": args.dtype}

    recall = {}
    exclude: set = set()
    if not args.no_recall:
        print("[1] pipeline with the zero-shot rater (candidates, Recall@20)", flush=True)
        recall["zero-shot"], pdir = pipeline_recall(args, None)
        c = load_candidates(pdir / CANDIDATES_FILE)
        exclude = set(zip(c["user"].tolist(), c["item"].tolist()))

    data = load_ml100k()
    profiles = make_profiles(data)
    eval_users, tune_users = split_users(data.n_users, args.eval_users, args.seed)
    heldout = sample_pairs(data, eval_users, args.eval_pairs, args.seed + 1)
    pool = sample_pairs(data, tune_users, max(args.sizes), args.seed + 2, exclude)
    run = eval_run(work, data, profiles, heldout)
    truth = heldout["label"].tolist()
    result["heldout_labels"] = {lab: truth.count(lab) for lab in LABELS}
    result["split"] = "by user (evaluation users never in any tuning set)"
    max_liked = RateSettings().max_liked

    print("[2] baselines", flush=True)
    tune_all = pool.iloc[:max(args.sizes)]
    rows = []
    maj = pool["label"].value_counts().idxmax()
    rows.append(baseline_rows(f"majority ({maj})", truth, {v: [maj] * len(truth)
                                                          for v in ("user", "item")}))
    score = embedding_scores(run, profiles, max_liked)
    rows.append(baseline_rows("embedding similarity (MiniLM)", truth,
                              embedding_predictions(score, tune_all, heldout)))
    logit = logistic_predictions(data, score, tune_all, heldout, args.seed)
    rows.append(baseline_rows(f"logistic: counts + similarity ({len(tune_all)} labels)", truth,
                              {"user": logit, "item": logit}))
    ceiling = logistic_predictions(data, score, tune_all, heldout, args.seed, mean_ratings=True)
    rows.append(baseline_rows("  + mean ratings, own left out (not in any prompt)", truth,
                              {"user": ceiling, "item": ceiling}))

    if args.probe_only:
        prows = probe_rows(args, data, profiles, pool, heldout, eval_users, prompts, max_liked)
        return probe_result(result, rows + prows, truth, t_start)

    print("[3] zero-shot SmolLM2-135M", flush=True)
    zero_id = rate(run, args, None, prompts)
    overrides = {"finetune.epochs": args.epochs, "finetune.lr": args.lr,
                 "finetune.last_layers": args.last_layers}
    ft = load_finetune_settings(args.finetune_config, overrides)
    adapters = {}
    timing = {}
    # Largest first, on its own: its tuning time is a standalone figure. The smaller (nested)
    # sets then take the frozen-prefix states of their prompts from memory (the card counts
    # them), so their times are lower than on their own.
    memo: dict = {}
    for n in sorted(args.sizes, reverse=True):
        out = work / "adapters" / f"ml100k-sim-{n}"
        print(f"[4] LoRA on {n} simulated labels -> {out}", flush=True)
        # reuse: the same labels, settings and prompts tuned before give that adapter back
        card = finetune(profiles, pool.iloc[:n], out, ft, max_liked=max_liked,
                        prompts_dir=prompts,
                        label_sources=[{"file": "simulated in bench/rater_quality.py",
                                        "seed": args.seed + 2}],
                        progress=False, force=True, reuse=True, prefix_memo=memo,
                        log=lambda m: print("   ", m, flush=True))
        timing[n] = card["training"]
        adapters[n] = (out, rate(run, args, out, prompts))

    figures = evaluate(run)
    by_id = {(r["model_id"], r["adapter"]): r for r in figures["raters"]}
    truth_of = dict(zip(zip(heldout["user"].tolist(), heldout["item"].tolist()), truth))
    rows.append({"name": "SmolLM2-135M zero-shot", "views": by_id[(zero_id, "")]["views"],
                 "probs": prob_views(run, zero_id, "", truth_of)})
    for n, (out, mid) in sorted(adapters.items()):
        reused = timing[n].get("prefix_states_reused", 0)
        rows.append({"name": f"SmolLM2-135M + LoRA ({n} labels)" + ("*" if reused else ""),
                     "views": by_id[(mid, out.name)]["views"], "n": n,
                     "probs": prob_views(run, mid, out.name, truth_of),
                     "finetune_s": timing[n]["wall_seconds"],
                     "s_per_example": timing[n]["seconds_per_example"],
                     "prefix_states_reused": reused})

    if not args.no_recall and not args.no_tuned_recall:
        big = max(args.sizes)
        print(f"[5] pipeline with the {big}-label adapter", flush=True)
        recall[f"lora-{big}"], _ = pipeline_recall(args, adapters[big][0])

    table = []
    nan = float("nan")
    for r in rows:
        v, pv = r["views"], r.get("probs", {})
        table.append([r["name"], v["user"]["kappa"], v["user"]["weighted_kappa"],
                      v["item"]["kappa"], v["item"]["weighted_kappa"], v["verdict"]["kappa"],
                      v["user"]["failed"] + v["item"]["failed"],
                      pv.get("user", {}).get("kappa", nan), pv.get("item", {}).get("kappa", nan),
                      r.get("finetune_s", nan)])
    print_table(["rater", "kappa user", "w-kappa user", "kappa item", "w-kappa item",
                 "kappa verdict", "not a label", "kappa user (probs)", "kappa item (probs)",
                 "tuning s"], table,
                title=f"Held-out audited pairs: {len(truth)} (SIMULATED labels "
                      f"{result['heldout_labels']}), users never seen in tuning", digits=3)
    print("kappa: of the answer text's label (a text that is not a label is a failure, left out); "
          "(probs): of the most probable of the three label tokens; *: tuning took the frozen "
          "layers' states of its prompts from the larger run (time lower than on its own)",
          flush=True)
    zero = next(r for r in rows if r["name"].endswith("zero-shot"))
    gains, gains_probs = {}, {}
    for r in rows:
        if "n" in r:
            # mean over the two views; NaN where zero-shot kappa is undefined (no labels)
            gains[r["n"]] = float(np.mean([r["views"][v]["kappa"] - zero["views"][v]["kappa"]
                                           for v in ("user", "item")]))
            gains_probs[r["n"]] = float(np.mean([r["probs"][v]["kappa"]
                                                 - zero["probs"][v]["kappa"]
                                                 for v in ("user", "item")]))
    if recall:
        print_table(["rater", "LLMHNI test Recall@20"], [[k, v] for k, v in recall.items()],
                    title="Clean-test Recall@20 of LLMHNI (configs/ml100k.toml)")
    result["raters"] = [{"name": r["name"], **{f"{v}_{m}": r["views"][v][m] for v in
                        ("user", "item", "verdict") for m in ("kappa", "weighted_kappa",
                                                               "accuracy", "failed")},
                         **{f"{v}_kappa_probs": r["probs"][v]["kappa"] for v in ("user", "item")
                            if "probs" in r},
                         **{k: r[k] for k in ("n", "finetune_s", "s_per_example",
                                              "prefix_states_reused") if k in r}}
                        for r in rows]
    result["kappa_gain_over_zero_shot"] = gains
    result["kappa_gain_over_zero_shot_probs"] = gains_probs
    result["targets"] = {
        "kappa_gain_at_least_0.2": {n: bool(g >= 0.2) for n, g in gains_probs.items()},
        "finetune_1000_within_15_min": (timing[1000]["wall_seconds"] <= 900
                                        if 1000 in timing
                                        and not timing[1000].get("prefix_states_reused")
                                        else None)}
    result["recall@20"] = recall
    result["finetune_settings"] = dataclasses.asdict(ft)
    result["wall_seconds"] = time.perf_counter() - t_start
    return result


def probe_result(result: dict, rows: list[dict], truth: list[str], t_start: float) -> dict:
    """The probe-only table and figures (label-free baselines beside the probe rows)."""
    nan = float("nan")
    table = [[r["name"], r["views"]["user"].get("auc_natural", nan),
              r["views"]["item"].get("auc_natural", nan),
              r["views"]["user"].get("auc_synthetic", nan),
              r["views"]["item"].get("auc_synthetic", nan), r["views"]["user"]["kappa"],
              r["views"]["item"]["kappa"], r["views"]["verdict"]["kappa"],
              r.get("finetune_s", nan)] for r in rows]
    print_table(["rater", "AUC nat. user", "AUC nat. item", "AUC syn. user", "AUC syn. item",
                 "kappa user", "kappa item", "kappa verdict", "tuning s"], table,
                title=f"Held-out pairs: {len(truth)} of users in no tuning set (SIMULATED "
                      f"labels {result['heldout_labels']})", digits=3)
    result["raters"] = [{"name": r["name"], **{f"{v}_{m}": r["views"][v].get(m) for v in
                         ("user", "item", "verdict") for m in ("kappa", "auc_natural",
                                                                "auc_synthetic")},
                         **{k: r[k] for k in ("n", "finetune_s", "states_s", "eval_states_s",
                                              "backend_max_abs_dp", "backend_s_per_prompt", "layers")
                            if k in r}} for r in rows]
    big = max((r for r in rows if "n" in r), key=lambda r: r["n"], default=None)
    if big is not None:
        v = big["views"]
        result["targets"] = {
            "natural_auc_user_at_least_0.65": bool(v["user"]["auc_natural"] >= 0.65),
            "synthetic_auc_one_view_at_least_0.75": bool(max(v["user"]["auc_synthetic"],
                                                             v["item"]["auc_synthetic"]) >= 0.75),
            "tune_within_10_min": bool(big["finetune_s"] <= 600)}
        logit = next((r for r in rows if r["name"].startswith("logistic: counts")), None)
        if logit is not None:
            result["targets"]["verdict_kappa_above_counts_similarity_logistic"] = bool(
                v["verdict"]["kappa"] > logit["views"]["verdict"]["kappa"])
    result["wall_seconds"] = time.perf_counter() - t_start
    return result


if __name__ == "__main__":
    emit_json(main(parse_args()))
