"""Rating throughput of SmolLM2-135M through vLLM, batched transformers and a plain loop.

The same rating prompts (user-centric view, built from MovieLens-100K: demographics and
favourite training titles with genres first, then the candidate item) are rated by

  (a) vLLM in-process (prefix caching, block size 32),
  (b) transformers in batches (left padding, last-position logits only),
  (c) a plain one-prompt-at-a-time ``generate`` loop (transformers, batch size 1),

each in its own subprocess, one after the other, so they never share cores or memory. Engine
start-up is timed apart from rating, and a few prompts of other users are rated first, untimed
(kernels are set up per batch shape on first use), so judgments/s is the steady rate. Then the default embedder (all-MiniLM-L6-v2) embeds every item profile through vLLM and
sentence-transformers. Prints a table, and as its last line one JSON object of the figures.

Needs ``python cli.py models prepare smollm2`` first. Usage::

    python bench/rating_throughput.py [--pairs 128] [--dtype float32] [--max-tokens 4]
    python bench/rating_throughput.py --raters vllm --adapter adapters/NAME --no-embed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

RATERS = {"vllm": "vLLM", "transformers": "transformers, batched", "loop": "plain generate loop",
          "lora-request": "vLLM + LoRARequest", "lora-merged": "vLLM + merged LoRA"}
# With --adapter: the same prompts through the adapter, applied per request (vLLM's LoRA
# kernels) and folded into the weights (rater.lora_mode = "merged"; merge time counts as start).
ADAPTER_KINDS = ("lora-request", "lora-merged")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=128, help="rating prompts (default 128)")
    p.add_argument("--users", type=int, default=0,
                   help="users the pairs come from (default pairs/4: 4 items per user)")
    p.add_argument("--warmup", type=int, default=16,
                   help="prompts of other users rated first, untimed (kernel set-up for the "
                        "batch shapes; default 16)")
    p.add_argument("--dtype", default="float32", choices=["bfloat16", "float32"])
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16, help="transformers batch size")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--raters", default="vllm,transformers,loop")
    p.add_argument("--no-embed", action="store_true", help="skip the embedding figures")
    p.add_argument("--adapter", default=None,
                   help="a LoRA adapter folder: also rate through it with vLLM, per request "
                        "and merged (adds lora-request,lora-merged to --raters)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out-file", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- prompts
def build_prompts(n_pairs: int, n_users: int, seed: int = 0) -> tuple[list, list[str], str]:
    """``(chat prompts, item profile texts, where the prompts came from)``.

    Pairs: per user 2 of the user's training items and 2 unobserved items (a candidate set's
    shape), users in order so each user's prompts sit together (prefix caching).
    """
    from llmhni_local.data.movielens import load_ml100k

    data = load_ml100k()
    rng = np.random.default_rng(seed)
    per_user = max(1, n_pairs // max(1, n_users))
    train = data.user_item_lists("train")
    users = rng.choice(data.n_users, size=n_users, replace=False)
    pairs = []
    for u in users:
        seen = train[u]
        pos = rng.choice(seen, size=min(len(seen), per_user // 2), replace=False)
        neg = []
        while len(neg) < per_user - len(pos):
            j = int(rng.integers(data.n_items))
            if j not in seen and j not in neg:
                neg.append(j)
        pairs += [(int(u), int(i)) for i in list(pos) + neg]
    pairs = pairs[:n_pairs]
    try:  # the project's own templates and profiles (prompts/rate_user_centric.toml)
        from llmhni_local.llm.profiles import make_profiles
        from llmhni_local.llm.prompts import load_template
        from llmhni_local.llm.rate import view_messages

        profiles = make_profiles(data)
        tpl = load_template("rate_user_centric")
        prompts = [view_messages("user", u, i, profiles, tpl, 10) for u, i in pairs]
        return prompts, list(profiles.items), "prompts/rate_user_centric.toml"
    except ImportError:
        return _own_prompts(data, pairs), _own_items(data), "bench's built-in template"


def _own_items(data) -> list[str]:
    return [f"{m['title']} ({m.get('year', '')}). Genres: {m.get('genres', '')}."
            for m in data.item_meta]


def _own_prompts(data, pairs) -> list:
    items = _own_items(data)
    train, ratings = data.train, data.train_rating
    prompts = []
    for u, i in pairs:
        mask = train[:, 0] == u
        order = np.argsort(-ratings[mask], kind="stable")[:8]
        fav = "\n".join(f"- {items[j]}" for j in train[mask][order, 1])
        meta = data.user_meta[u]
        prompts.append([
            {"role": "system", "content": "You judge how well a film matches a user's tastes."},
            {"role": "user", "content": f"User: {meta['age']}-year-old {meta['gender']} "
                                        f"{meta['occupation']}. Favourite films:\n{fav}\n\n"
                                        f"Candidate film: {items[i]}\nHow relevant is it? Answer "
                                        "with exactly one word: High, Medium or Low."},
        ])
    return prompts


def cpu_features() -> list[str]:
    """The vector extensions that decide fp32 vs bf16 speed on a CPU (Linux only)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]


# ---------------------------------------------------------------------------- workers
def run_rater(kind: str, prompts: list, warmup: list, args: argparse.Namespace) -> dict:
    from llmhni_local.llm.backends import make_rating_backend
    from llmhni_local.llm.settings import RaterSettings

    backend = "vllm" if kind == "vllm" or kind in ADAPTER_KINDS else "transformers"
    batch = 1 if kind == "loop" else args.batch_size
    lora = kind in ADAPTER_KINDS
    settings = RaterSettings(backend=backend, model=args.model, dtype=args.dtype,
                             max_tokens=args.max_tokens, batch_size=batch,
                             adapter=args.adapter if lora else None,
                             lora_mode=kind.split("-")[1] if lora else "auto")
    t0 = time.perf_counter()
    rater = make_rating_backend(settings)
    start_s = time.perf_counter() - t0
    if warmup:  # other users' prompts: no prefix of the timed ones gets cached
        rater.rate(warmup)
    t1 = time.perf_counter()
    judgments = rater.rate(prompts)
    rate_s = time.perf_counter() - t1
    rater.close()
    return {"kind": kind, "start_s": start_s, "rate_s": rate_s, "n": len(prompts),
            "per_s": len(prompts) / rate_s, "model_id": rater.model_id,
            "judgments": [[j.text, j.label, j.probs, j.label_mass] for j in judgments]}


def run_embedder(kind: str, texts: list[str], args: argparse.Namespace) -> dict:
    from llmhni_local.llm.backends import make_embedding_backend
    from llmhni_local.llm.settings import EmbedderSettings

    settings = EmbedderSettings(backend="vllm" if kind == "embed-vllm" else
                                "sentence-transformers")
    t0 = time.perf_counter()
    emb = make_embedding_backend(settings)
    emb.embed([f"warm-up text {k}: a film about {k % 7} friends" for k in range(64)])
    start_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    vecs = emb.embed(texts)
    took = time.perf_counter() - t1
    emb.close()
    return {"kind": kind, "start_s": start_s, "rate_s": took, "n": len(texts),
            "per_s": len(texts) / took, "vectors": vecs.tolist()}


def worker(args: argparse.Namespace) -> None:
    payload = json.loads(Path(args.prompts_file).read_text())
    if args.worker.startswith("embed-"):
        out = run_embedder(args.worker, payload["items"], args)
    else:
        out = run_rater(args.worker, payload["prompts"], payload["warmup"], args)
    Path(args.out_file).write_text(json.dumps(out))


def spawn(kind: str, args: argparse.Namespace, prompts_file: Path, tmp: Path) -> dict:
    out_file = tmp / f"{kind}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
           "--prompts-file", str(prompts_file), "--out-file", str(out_file),
           "--dtype", args.dtype, "--max-tokens", str(args.max_tokens),
           "--batch-size", str(args.batch_size), "--model", args.model]
    if args.adapter:
        cmd += ["--adapter", args.adapter]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:])
        raise SystemExit(f"{kind} worker failed with exit status {proc.returncode}")
    out = json.loads(out_file.read_text())
    out["process_s"] = time.perf_counter() - t0
    print(f"  {kind}: {out['per_s']:.2f}/s (start {out['start_s']:.1f} s, "
          f"process {out['process_s']:.0f} s)", flush=True)
    return out


# ---------------------------------------------------------------------------- comparison
def agreement(a: dict, b: dict) -> dict:
    """How far two raters' judgments of the same prompts are apart."""
    pa = [j[2] for j in a["judgments"]]
    pb = [j[2] for j in b["judgments"]]
    ok = [k for k in range(len(pa)) if pa[k] and pb[k]]
    if not ok:
        return {"compared": 0}
    ha = np.array([pa[k]["High"] for k in ok])
    hb = np.array([pb[k]["High"] for k in ok])
    arg = [max(pa[k], key=pa[k].get) == max(pb[k], key=pb[k].get) for k in ok]
    diffs = [abs(pa[k][lab] - pb[k][lab]) for k in ok for lab in pa[k]]
    corr = float(np.corrcoef(ha, hb)[0, 1]) if ha.std() > 0 and hb.std() > 0 else float("nan")
    return {"compared": len(ok), "argmax_agree": float(np.mean(arg)),
            "max_abs_prob_diff": float(max(diffs)), "corr_p_high": corr,
            "same_text": float(np.mean([a["judgments"][k][0] == b["judgments"][k][0]
                                        for k in ok]))}


def summary(r: dict) -> dict:
    js = r["judgments"]
    labels = [j[1] for j in js]
    return {"n": len(js), "failures": sum(lab is None for lab in labels),
            "label_counts": {lab: labels.count(lab) for lab in ("High", "Medium", "Low")},
            "mean_p_high": float(np.mean([j[2]["High"] for j in js if j[2]])),
            "mean_label_mass": float(np.mean([j[3] for j in js if j[3] is not None]))}


def main(args: argparse.Namespace) -> None:
    from llmhni_local.llm.registry import resolve_model

    resolve_model(args.model)  # fails early with "run models prepare" when needed
    n_users = args.users or max(1, args.pairs // 4)
    per_user = max(1, args.pairs // n_users)
    n_warm_users = -(-args.warmup // per_user) if args.warmup else 0
    everything, items, source = build_prompts(args.pairs + n_warm_users * per_user,
                                              n_users + n_warm_users)
    prompts, warmup = everything[:args.pairs], everything[args.pairs:][:args.warmup]
    from llmhni_local.llm.chat import encode_prompts, load_tokenizer, render_prompts

    tok = load_tokenizer(resolve_model(args.model).path)
    lengths = [len(x) for x in encode_prompts(tok, render_prompts(tok, prompts))]
    print(f"{len(prompts)} prompts from {n_users} users (+{len(warmup)} warm-up prompts of "
          f"other users, untimed) ({source}); mean {np.mean(lengths):.0f} "
          f"tokens (min {min(lengths)}, max {max(lengths)}); model {args.model}, {args.dtype}, "
          f"max_tokens {args.max_tokens}; {os.cpu_count()} CPUs ({', '.join(cpu_features())})",
          flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        prompts_file = tmp / "prompts.json"
        prompts_file.write_text(json.dumps({"prompts": prompts, "warmup": warmup,
                                            "items": items}))
        kinds = [k.strip() for k in args.raters.split(",") if k.strip()]
        if args.adapter:
            kinds += [k for k in ADAPTER_KINDS if k not in kinds]
        for kind in kinds:
            if kind not in RATERS:
                raise SystemExit(f"unknown rater {kind!r} (known: {', '.join(RATERS)})")
            results[kind] = spawn(kind, args, prompts_file, tmp)
        if not args.no_embed:
            for kind in ("embed-vllm", "embed-st"):
                results[kind] = spawn(kind, args, prompts_file, tmp)

    figures: dict = {"pairs": len(prompts), "users": n_users, "warmup": len(warmup),
                     "dtype": args.dtype,
                     "mean_prompt_tokens": float(np.mean(lengths)), "prompt_source": source,
                     "cpus": os.cpu_count(), "cpu_features": cpu_features()}
    print(f"\n{'rater':<24} {'judgments/s':>12} {'start s':>8} {'x loop':>8}  failures")
    loop = results.get("loop", {}).get("per_s")
    for kind, title in RATERS.items():
        if kind not in results:
            continue
        r = results[kind]
        ratio = r["per_s"] / loop if loop else float("nan")
        s = summary(r)
        print(f"{title:<24} {r['per_s']:>12.2f} {r['start_s']:>8.1f} {ratio:>8.2f}  "
              f"{s['failures']}/{s['n']}")
        figures[kind] = {"judgments_per_s": r["per_s"], "start_s": r["start_s"],
                         "x_loop": ratio, **s}
    for a, b in (("vllm", "transformers"), ("vllm", "loop"), ("transformers", "loop"),
                 ("lora-request", "lora-merged")):
        if a in results and b in results:
            figures[f"agree_{a}_{b}"] = agreement(results[a], results[b])
            g = figures[f"agree_{a}_{b}"]
            print(f"agreement {a} vs {b}: argmax {g.get('argmax_agree', float('nan')):.3f}, "
                  f"max |dp| {g.get('max_abs_prob_diff', float('nan')):.2e}, "
                  f"corr P(High) {g.get('corr_p_high', float('nan')):.4f}, "
                  f"same text {g.get('same_text', float('nan')):.3f}")
    if "lora-request" in results and "lora-merged" in results:
        ratio = results["lora-merged"]["per_s"] / results["lora-request"]["per_s"]
        figures["lora_merged_x_request"] = ratio
        line = f"merged LoRA / LoRARequest = {ratio:.2f}x"
        if "vllm" in results:
            base = results["lora-merged"]["per_s"] / results["vllm"]["per_s"]
            figures["lora_merged_x_base"] = base
            line += f"; merged LoRA / base vLLM = {base:.2f}x"
        print(line)
    if "vllm" in results and loop:
        target = results["vllm"]["per_s"] / loop
        print(f"vLLM / plain loop = {target:.2f}x (target >= 5x): "
              f"{'met' if target >= 5 else 'NOT met'}")
    if "embed-vllm" in results:
        va = np.asarray(results["embed-vllm"]["vectors"])
        vb = np.asarray(results["embed-st"]["vectors"])
        cos = (va * vb).sum(1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
        print(f"\n{'embedder (minilm)':<24} {'texts/s':>12} {'start s':>8}")
        for kind, title in (("embed-vllm", "vLLM pooling"), ("embed-st", "sentence-transformers")):
            r = results[kind]
            print(f"{title:<24} {r['per_s']:>12.1f} {r['start_s']:>8.1f}")
            figures[kind] = {"texts_per_s": r["per_s"], "start_s": r["start_s"], "n": r["n"]}
        figures["embed_min_cosine"] = float(cos.min())
        print(f"vLLM vs sentence-transformers: min cosine {cos.min():.6f} over {len(cos)} items")
    print(json.dumps(figures))


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        worker(ARGS)
    else:
        main(ARGS)
