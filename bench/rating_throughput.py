"""Rating throughput of SmolLM2-135M against the machine's matmul bound.

One run measures, one after the other so they never share cores:

  (0) the machine's matmul rate in the rater's dtype (torch, ``torch.get_num_threads()``
      threads): the linear layers of one decoder layer of the model (q, k, v, o, gate, up,
      down) on M tokens, for a few M, best of several trials; measured before the raters and
      again after them, the higher figure is the bound;
  (a) vLLM in-process, as the toolkit rates (``rater.max_tokens = 1``, likelihood choice at
      the answer cue, prefix caching, ``rater.dtype`` resolved by ``core/precision.py``);
  (b) optionally the toolkit's batched transformers backend;
  (d) optionally the likelihood reader (``rate.mode = "likelihood"``) on the same pairs and
      views: transformers with each context's KV cache reused for its names, and vLLM's
      prompt log-probabilities (which vLLM serves without its prefix cache). Each item's
      neutral term (one request per item per run, whoever has it as a candidate) is timed
      apart, before the timed part, and reported as such;
  (c) the plain loop a user would write: transformers, the model folder's own dtype, one
      prompt at a time, ``generate`` greedy until a label word appears (``stop_strings``,
      at most ``--loop-max-new-tokens``), the label parsed from the text.

The prompts are real MovieLens-100K rating prompts built as ``rate`` builds them
(``llm.rate.view_messages``, both views, one user's prompts adjacent: user-centric, then
item-centric). Each rater runs in its own subprocess; engine start-up is timed apart, and a few
prompts of other users are rated first, untimed, so judgments/s is the steady rate.

Reported per rater: judgments/s, x the plain loop, prompt tokens, the share served from vLLM's
prefix cache (``RequestOutput.num_cached_tokens``), the unique (computed) prompt tokens per
judgment, and the achieved FLOP rate over those tokens (2 x non-embedding parameters x unique
tokens/s; attention over the context is left out) as a fraction of the matmul bound. Labels
and probabilities are compared between raters. Prints tables, then one JSON line.

Needs ``python cli.py models prepare smollm2`` first. Usage::

    python bench/rating_throughput.py                       # 128 prompts, dtype auto
    python bench/rating_throughput.py --dtype both          # vLLM in float32 and bfloat16
    python bench/rating_throughput.py --raters vllm --adapter adapters/NAME
    python bench/rating_throughput.py --raters vllm,likelihood-transformers,likelihood-vllm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, emit_json, print_table

ROOT = REPO_ROOT
RATERS = {"vllm": "vLLM", "transformers": "transformers, batched", "loop": "plain generate loop",
          "lora-request": "vLLM + LoRARequest", "lora-merged": "vLLM + merged LoRA",
          "likelihood-transformers": "likelihood reader, transformers (KV cache per context)",
          "likelihood-vllm": "likelihood reader, vLLM prompt log-probabilities"}
LIKELIHOOD = ("likelihood-transformers", "likelihood-vllm")
# With --adapter: the same prompts through the adapter, applied per request (vLLM's LoRA
# kernels) and folded into the weights (rater.lora_mode = "merged"; merge time counts as start).
ADAPTER_KINDS = ("lora-request", "lora-merged")
# Probabilities of two raters must agree this closely (max |dp| over labels): fp32 against
# fp32 differs by ~1e-5 (kernel order); bfloat16 keeps 8 bits of mantissa.
PROB_TOL = {"float32": 1e-3, "bfloat16": 3e-2, "float16": 1e-2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", "--pairs", dest="prompts", type=int, default=128,
                   help="timed rating prompts (judgments; default 128)")
    p.add_argument("--per-user", type=int, default=4,
                   help="candidate pairs per user, each rated in both views (default 4)")
    p.add_argument("--warmup", type=int, default=16,
                   help="prompts of other users rated first, untimed (default 16)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "both"],
                   help="rater dtype for vLLM / batched transformers; 'both' runs float32 and "
                        "bfloat16 (default auto: core/precision.py's choice)")
    p.add_argument("--max-tokens", type=int, default=1, help="rater.max_tokens (default 1)")
    p.add_argument("--block-size", type=int, default=32, help="rater.block_size (default 32)")
    p.add_argument("--loop-max-new-tokens", type=int, default=4,
                   help="cap on the plain loop's generated tokens (default 4)")
    p.add_argument("--loop-prompts", type=int, default=0,
                   help="time the plain loop on the first N prompts only (it is the slow one; "
                        "default 0: all)")
    p.add_argument("--batch-size", type=int, default=16, help="transformers batch size")
    p.add_argument("--matmul-tokens", default="256,1024,4096",
                   help="token counts M of the matmul bound (default 256,1024,4096)")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--raters", default="vllm,loop",
                   help="comma list of vllm, transformers, loop (default vllm,loop)")
    p.add_argument("--embed", action="store_true",
                   help="also time the default embedder through vLLM and sentence-transformers")
    p.add_argument("--no-embed", action="store_true", help=argparse.SUPPRESS)  # the old default
    p.add_argument("--adapter", default=None,
                   help="a LoRA adapter folder: also rate through it with vLLM, per request "
                        "and merged (adds lora-request,lora-merged to --raters)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-dtype", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out-file", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- prompts
def build_prompts(n_users: int, per_user: int, seed: int = 0) -> tuple[list, list[str], list]:
    """``(chat prompts, item profile texts, work rows)``: per user ``per_user`` pairs (half
    training items, half unobserved), user-centric prompts then item-centric ones, users
    adjacent; the work rows ``(user, item, view, kind)`` are the same judgments in the same
    order, for the likelihood reader."""
    from llmhni_local.data.movielens import load_ml100k
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.judgments.plan import view_messages
    from llmhni_local.text.profiles import make_profiles

    data = load_ml100k()
    rng = np.random.default_rng(seed)
    train = data.user_item_lists("train")
    profiles = make_profiles(data)
    tpls = load_templates(tuple(VIEW_TEMPLATES.values()))
    prompts, work = [], []
    for u in rng.choice(data.n_users, size=n_users, replace=False):
        seen = train[u]
        items = [int(i) for i in rng.choice(seen, size=min(len(seen), per_user // 2),
                                            replace=False)]
        while len(items) < per_user:
            j = int(rng.integers(data.n_items))
            if j not in seen and j not in items:
                items.append(j)
        for view in ("user", "item"):
            prompts += [view_messages(view, int(u), i, profiles, tpls[VIEW_TEMPLATES[view]], 10)
                        for i in items]
            work += [(int(u), i, view, "observed" if i in seen else "unobserved")
                     for i in items]
    return prompts, list(profiles.items), work


def prefix_reuse(ids: list[list[int]], block: int) -> dict:
    """The share of prompt tokens an ideal prefix cache could serve, given the order: per
    prompt the longest common token prefix with any earlier prompt, counted in whole tokens
    and in whole blocks of ``block`` tokens (what vLLM's cache can hit). The template sets the
    first figure; the second is the most a block size allows."""
    total = tok_hits = block_hits = 0
    for k, row in enumerate(ids):
        best = 0
        for prev in ids[:k]:
            n = 0
            for a, b in zip(row, prev):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        best = min(best, len(row) - 1)  # the last prompt token is always computed
        total += len(row)
        tok_hits += best
        block_hits += best // block * block
    return {"token_share": tok_hits / total, "block_share": block_hits / total}


# ---------------------------------------------------------------------------- the bound
def cpu_bf16() -> dict:
    """What decides bf16 speed on this CPU: flags and torch's view of the vector unit."""
    import torch

    from llmhni_local.core.precision import cpu_flags

    flags = cpu_flags()
    return {"flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                      if f in flags],
            "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "torch_threads": torch.get_num_threads()}


def model_shape(path: Path) -> dict:
    """Layer sizes and the non-embedding parameter count (the model built on the meta device:
    no weights read). The tied LM head is left out too: vLLM runs it at one position per
    judgment."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    emb = {id(p) for p in model.get_input_embeddings().parameters()}
    emb |= {id(p) for p in model.get_output_embeddings().parameters()}
    non_emb = sum(p.numel() for p in model.parameters() if id(p) not in emb)
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {"hidden": cfg.hidden_size, "intermediate": cfg.intermediate_size,
            "q": cfg.num_attention_heads * head, "kv": cfg.num_key_value_heads * head,
            "layers": cfg.num_hidden_layers, "non_embedding_params": int(non_emb),
            "config_dtype": str(getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", ""))
            .replace("torch.", "")}


def matmul_rate(shape: dict, dtype: str, tokens: list[int], trials: int = 5,
                min_s: float = 0.25) -> dict:
    """FLOP/s of one decoder layer's linear layers (q, k, v, o, gate, up, down: the model's
    weight shapes) on M tokens, per M: the best of ``trials`` timed loops of at least
    ``min_s`` seconds, and of two kernels, ``F.linear`` (MKL for float32) and oneDNN with
    prepacked weights (``torch.utils.mkldnn``, the library vLLM's CPU linear layers call), so
    the bound is the faster of them."""
    import torch
    import torch.nn.functional as F
    from torch.utils import mkldnn

    dt = getattr(torch, dtype)
    h, f = shape["hidden"], shape["intermediate"]
    outs = (shape["q"], shape["kv"], shape["kv"], h, f, f)  # q k v o gate up, input h
    torch.manual_seed(0)
    w_in = [torch.nn.Linear(h, o, bias=False).to(dt).eval() for o in outs]
    w_down = torch.nn.Linear(f, h, bias=False).to(dt).eval()
    params = sum(w.weight.numel() for w in w_in) + w_down.weight.numel()
    packed = [mkldnn.to_mkldnn(w, dt) for w in (*w_in, w_down)]
    rates: dict[int, float] = {}
    kernels: dict[int, dict[str, float]] = {}
    for m in tokens:
        x, y = torch.randn(m, h).to(dt), torch.randn(m, f).to(dt)
        xm, ym = x.to_mkldnn(), y.to_mkldnn()

        def dense() -> None:
            for w in w_in:
                F.linear(x, w.weight)
            F.linear(y, w_down.weight)

        def onednn() -> None:
            for w in packed[:-1]:
                w(xm)
            packed[-1](ym)

        kernels[m] = {name: 2.0 * m * params / _best_time(fn, trials, min_s)
                      for name, fn in (("F.linear", dense), ("onednn", onednn))}
        rates[m] = max(kernels[m].values())
    return {"flop_per_s": max(rates.values()), "by_tokens": rates, "by_kernel": kernels}


def _best_time(fn, trials: int, min_s: float) -> float:
    """Seconds per call of ``fn``: loops of at least ``min_s`` seconds, the best of ``trials``."""
    import torch

    with torch.inference_mode():
        fn()  # the first call sets up the kernels
        reps = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            took = time.perf_counter() - t0
            if took >= min_s:
                break
            reps *= 2
        best = took / reps
        for _ in range(trials - 1):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            best = min(best, (time.perf_counter() - t0) / reps)
    return best


# ---------------------------------------------------------------------------- workers
def steady(rate_fn, prompts: list, warmup: list, stats=None) -> tuple[list, float, dict]:
    """Rate the warm-up prompts, then time ``prompts``; token counts (``stats()``, the
    backend's ``token_stats``) of the timed part only."""
    if warmup:  # other users' prompts: no prefix of the timed ones gets cached
        rate_fn(warmup)
    before = stats() if stats else {}
    t0 = time.perf_counter()
    out = rate_fn(prompts)
    took = time.perf_counter() - t0
    diff = {k: v - before.get(k, 0) for k, v in (stats() if stats else {}).items()}
    return out, took, diff


def run_rater(kind: str, prompts: list, warmup: list, args: argparse.Namespace) -> dict:
    """The toolkit's own rater (vLLM, batched transformers, or vLLM with an adapter)."""
    from llmhni_local.backends import make_rating_backend
    from llmhni_local.engine.settings import RaterSettings

    backend = "transformers" if kind == "transformers" else "vllm"
    lora = kind in ADAPTER_KINDS
    settings = RaterSettings(backend=backend, model=args.model, dtype=args.worker_dtype,
                             max_tokens=args.max_tokens, batch_size=args.batch_size,
                             block_size=args.block_size,
                             adapter=args.adapter if lora else None,
                             lora_mode=kind.split("-")[1] if lora else "auto")
    t0 = time.perf_counter()
    rater = make_rating_backend(settings)
    start_s = time.perf_counter() - t0
    judgments, rate_s, toks = steady(rater.rate, prompts, warmup, rater.token_stats)
    computed = toks["prompt_tokens"] - toks["cached_tokens"]
    out = {"kind": kind, "dtype": rater.dtype, "dtype_reason": rater.dtype_reason,
            "start_s": start_s, "rate_s": rate_s, "n": len(prompts),
            "prompt_tokens": toks["prompt_tokens"], "cached_tokens": toks["cached_tokens"],
            "cached_known": bool(rater.cached_known), "computed_tokens": computed,
            "generated_tokens": 0, "model_id": rater.model_id,
            "judgments": [[j.text, j.label, j.probs, j.label_mass] for j in judgments]}
    _save_then_close(out, rater, args)
    return out


def run_likelihood(kind: str, work: list, warm: list, args: argparse.Namespace) -> dict:
    """The likelihood reader as the rate stage runs it (``llm/likelihood.pmi_scores`` in
    batches of ``rate.batch_size`` = 256 rows), on the same pairs and views."""
    from llmhni_local.backends import make_rating_backend
    from llmhni_local.data.movielens import load_ml100k
    from llmhni_local.engine.api import LoglikelihoodRequest
    from llmhni_local.engine.prompts import load_template
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.likelihood import pmi_scores
    from llmhni_local.judgments.plan import WorkItem
    from llmhni_local.text.profiles import make_profiles

    profiles = make_profiles(load_ml100k())
    tpl = load_template("likelihood")
    settings = RaterSettings(backend=kind.split("-")[1], model=args.model,
                             dtype=args.worker_dtype, batch_size=args.batch_size,
                             block_size=args.block_size)
    t0 = time.perf_counter()
    rater = make_rating_backend(settings)
    start_s = time.perf_counter() - t0
    neutral: dict[int, float] = {}  # kept across batches, as the rate stage keeps it

    def score(rows: list) -> list:
        out: list = []
        for b in range(0, len(rows), 256):
            out += pmi_scores(rater, [WorkItem(*r) for r in rows[b:b + 256]], profiles, tpl, 10,
                              neutral)
        return out

    if warm:
        score(warm)
    # An item's neutral term is one request per item per run (not per pair), amortised over
    # every user who has the item as a candidate: timed here on its own, then kept.
    items = sorted({int(r[1]) for r in work} - set(neutral))
    neutral_ctx = tpl.render("neutral_context", {})
    t0 = time.perf_counter()
    neutral.update(zip(items, rater.loglikelihood(
        [LoglikelihoodRequest(neutral_ctx, tpl.render("continuation",
                                                      {"item_name": profiles.item_names[i]}),
                              item=i)
         for i in items])))
    neutral_s = time.perf_counter() - t0
    scores, rate_s, toks = steady(score, work, [], rater.token_stats)
    out = {"kind": kind, "neutral_items": len(items), "neutral_s": neutral_s, "dtype": rater.dtype, "dtype_reason": rater.dtype_reason,
            "start_s": start_s, "rate_s": rate_s, "n": len(work),
            "prompt_tokens": toks["prompt_tokens"], "cached_tokens": 0, "cached_known": False,
            "computed_tokens": toks["prompt_tokens"], "generated_tokens": 0,
            "model_id": rater.model_id, "scores": scores,
            "judgments": [["", None, None, None] for _ in scores]}
    _save_then_close(out, rater, args)
    return out


def _save_then_close(out: dict, rater, args: argparse.Namespace) -> None:
    """Write the figures before the engine shuts down: vLLM's CPU engine sometimes aborts
    in its shutdown ("terminate called without an active exception") after the work is
    done, and the figures should not be lost with it."""
    Path(args.out_file).write_text(json.dumps(out))
    rater.close()


def run_loop(prompts: list, warmup: list, args: argparse.Namespace) -> dict:
    """The loop a user would write: one prompt at a time, the folder's own dtype, ``generate``
    until a label word appears, the label parsed from the text. The first step's logits give
    the label probabilities for the agreement check (no extra forward pass)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmhni_local.engine.api import LABELS
    from llmhni_local.engine.chat import answer_cue, render_prompt
    from llmhni_local.engine.labels import label_token_ids, parse_label, probs_from_logprobs
    from llmhni_local.weights.registry import resolve_model

    path = str(resolve_model(args.model).path)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    start_s = time.perf_counter() - t0
    counts = {"prompt_tokens": 0, "generated_tokens": 0}
    label_ids: dict = {}

    def rate(batch: list) -> list:
        out = []
        for messages in batch:
            enc = tok(render_prompt(tok, messages), return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=args.loop_max_new_tokens,
                                     do_sample=False, stop_strings=list(LABELS), tokenizer=tok,
                                     pad_token_id=tok.eos_token_id, output_logits=True,
                                     return_dict_in_generate=True)
            n = enc["input_ids"].shape[1]
            new = gen.sequences[0, n:]
            text = tok.decode(new, skip_special_tokens=True)
            cue = answer_cue(messages)
            if cue not in label_ids:
                label_ids[cue] = label_token_ids(tok, cue=cue)
            ids = label_ids[cue]
            lp = torch.log_softmax(gen.logits[0][0].float(), dim=-1)
            probs, mass = probs_from_logprobs({t: float(lp[t]) for t in ids.values()}, ids)
            counts["prompt_tokens"] += n
            counts["generated_tokens"] += len(new)
            out.append([text, parse_label(text), probs, mass])
        return out

    judgments, rate_s, toks = steady(rate, prompts, warmup, counts)
    # Each forward pass after the prefill adds one token (the KV cache keeps the rest).
    computed = toks["prompt_tokens"] + toks["generated_tokens"] - len(prompts)
    return {"kind": "loop", "dtype": str(model.dtype).replace("torch.", ""),
            "dtype_reason": "the model folder's own dtype (from_pretrained default)",
            "start_s": start_s, "rate_s": rate_s, "n": len(prompts),
            "prompt_tokens": toks["prompt_tokens"], "cached_tokens": 0, "cached_known": True,
            "computed_tokens": computed, "generated_tokens": toks["generated_tokens"],
            "model_id": path, "judgments": judgments}


def run_embedder(kind: str, texts: list[str], args: argparse.Namespace) -> dict:
    from llmhni_local.backends import make_embedding_backend
    from llmhni_local.engine.settings import EmbedderSettings

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
    elif args.worker in LIKELIHOOD:
        out = run_likelihood(args.worker, payload["work"], payload["warm_work"], args)
    elif args.worker == "loop":
        n = args.loop_prompts or len(payload["prompts"])
        # No batch shapes to set up one prompt at a time: two warm-up prompts do.
        out = run_loop(payload["prompts"][:n], payload["warmup"][:2], args)
    else:
        out = run_rater(args.worker, payload["prompts"], payload["warmup"], args)
    Path(args.out_file).write_text(json.dumps(out))


def spawn(kind: str, dtype: str, args: argparse.Namespace, prompts_file: Path,
          tmp: Path) -> dict:
    out_file = tmp / f"{kind}-{dtype}.json"
    # "auto" goes to the rater as such, so its dtype reason is the toolkit's own.
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
           "--worker-dtype", "auto" if args.dtype == "auto" else dtype, "--prompts-file", str(prompts_file),
           "--out-file", str(out_file), "--max-tokens", str(args.max_tokens),
           "--block-size", str(args.block_size), "--batch-size", str(args.batch_size),
           "--loop-max-new-tokens", str(args.loop_max_new_tokens),
           "--loop-prompts", str(args.loop_prompts), "--model", args.model]
    if args.adapter:
        cmd += ["--adapter", args.adapter]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        if not out_file.is_file():
            sys.stderr.write(proc.stdout[-4000:])
            raise SystemExit(f"{kind} worker failed with exit status {proc.returncode}")
        print(f"  {kind}: the worker exited with status {proc.returncode} after saving its "
              "figures (an engine shutdown abort); the figures are kept", flush=True)
    out = json.loads(out_file.read_text())
    out["process_s"] = time.perf_counter() - t0
    out["per_s"] = out["n"] / out["rate_s"]
    extra = (f", neutral terms of {out['neutral_items']} items {out['neutral_s']:.1f} s apart"
             if "neutral_s" in out else "")
    print(f"  {kind} ({out.get('dtype', dtype)}): {out['per_s']:.2f}/s (start "
          f"{out['start_s']:.1f} s, process {out['process_s']:.0f} s{extra})", flush=True)
    return out


# ---------------------------------------------------------------------------- comparison
def agreement(a: dict, b: dict, tol: float) -> dict:
    """How far two raters' judgments of the same prompts are apart: the most likely label,
    the label each decided (the loop's is parsed from its text), and the probabilities, over
    the prompts both rated (the loop may have rated the first ones only)."""
    ja, jb = a["judgments"], b["judgments"]
    ok = [k for k in range(min(len(ja), len(jb))) if ja[k][2] and jb[k][2]]
    if not ok:
        return {"compared": 0, "ok": False}
    top = [max(ja[k][2], key=ja[k][2].get) == max(jb[k][2], key=jb[k][2].get) for k in ok]
    both = [k for k in ok if ja[k][1] is not None and jb[k][1] is not None]
    diffs = [abs(ja[k][2][lab] - jb[k][2][lab]) for k in ok for lab in ja[k][2]]
    out = {"compared": len(ok), "argmax_agree": float(np.mean(top)),
           "labels_compared": len(both),
           "same_label": float(np.mean([ja[k][1] == jb[k][1] for k in both])) if both else None,
           "max_abs_prob_diff": float(max(diffs)), "tolerance": tol}
    out["ok"] = out["argmax_agree"] == 1.0 and out["max_abs_prob_diff"] <= tol and \
        out["same_label"] in (None, 1.0)
    return out


def summary(r: dict) -> dict:
    if "scores" in r:  # the likelihood reader: a failure is a missing score
        s = [x for x in r["scores"] if x is not None]
        return {"n": len(r["scores"]), "failures": len(r["scores"]) - len(s),
                "score_mean": float(np.mean(s)) if s else None,
                "score_std": float(np.std(s)) if s else None}
    labels = [j[1] for j in r["judgments"]]
    return {"n": len(labels), "failures": sum(lab is None for lab in labels),
            "label_counts": {lab: labels.count(lab) for lab in ("High", "Medium", "Low")}}


def figures_of(r: dict, loop: float | None, bounds: dict, non_emb: int) -> dict:
    """Judgments/s, x loop, token figures and the FLOP-bound fraction of one rater."""
    n = r["n"]
    achieved = 2.0 * non_emb * r["computed_tokens"] / r["rate_s"]
    bound = bounds.get(r["dtype"])
    return {"dtype": r["dtype"], "dtype_reason": r["dtype_reason"],
            "judgments_per_s": r["per_s"], "start_s": r["start_s"],
            "x_loop": r["per_s"] / loop if loop else math.nan,
            "prompt_tokens_per_judgment": r["prompt_tokens"] / n,
            "prefix_cache_hit_share": (r["cached_tokens"] / r["prompt_tokens"]
                                       if r["cached_known"] else None),
            "unique_tokens_per_judgment": r["computed_tokens"] / n,
            "generated_tokens_per_judgment": r["generated_tokens"] / n,
            "achieved_flop_per_s": achieved,
            "flop_fraction": achieved / bound if bound else math.nan, **summary(r)}


# ---------------------------------------------------------------------------- main
def measure_bounds(shape: dict, dtypes: list[str], tokens: list[int], into: dict) -> None:
    for dt in dtypes:
        m = matmul_rate(shape, dt, tokens)
        into.setdefault(dt, []).append(m)
        print(f"  matmul {dt}, GFLOP/s (F.linear/oneDNN): " + ", ".join(
            f"M={k} {v['F.linear'] / 1e9:.1f}/{v['onednn'] / 1e9:.1f}"
            for k, v in m["by_kernel"].items()), flush=True)


def plan(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[str]]:
    """``[(kind, dtype)]`` of the rater runs and the dtypes whose bound is measured."""
    from llmhni_local.core.precision import resolve_dtype

    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else \
        [resolve_dtype(args.dtype)[0]]
    kinds = [k.strip() for k in args.raters.split(",") if k.strip()]
    if args.adapter:
        kinds += [k for k in ADAPTER_KINDS if k not in kinds]
    for kind in kinds:
        if kind not in RATERS:
            raise SystemExit(f"unknown rater {kind!r} (known: {', '.join(RATERS)})")
    runs = [(k, d) for k in kinds if k != "loop" for d in dtypes]
    if "loop" in kinds:
        runs.append(("loop", "model"))
    return runs, dtypes


def main(args: argparse.Namespace) -> None:
    from llmhni_local.core.precision import resolve_dtype
    from llmhni_local.engine.chat import encode_prompts, load_tokenizer, render_prompts
    from llmhni_local.weights.registry import resolve_model

    spec = resolve_model(args.model)  # fails early with "run models prepare" when needed
    runs, dtypes = plan(args)
    shape = model_shape(spec.path)
    per_user = 2 * args.per_user
    n_users = -(-args.prompts // per_user)
    n_warm = -(-args.warmup // per_user) if args.warmup else 0
    everything, items, all_work = build_prompts(n_users + n_warm, args.per_user)
    prompts = everything[:args.prompts]
    warmup = everything[n_users * per_user:][:args.warmup]
    work = all_work[:args.prompts]
    warm_work = all_work[n_users * per_user:][:args.warmup]
    tok = load_tokenizer(spec.path)
    ids = encode_prompts(tok, render_prompts(tok, warmup + prompts))
    lengths = [len(x) for x in ids[len(warmup):]]
    reuse = prefix_reuse(ids, args.block_size)  # over warm-up + timed, as the engine sees them
    cpu = cpu_bf16()
    bound_dtypes = sorted({*dtypes, shape["config_dtype"]} & {"float32", "bfloat16"})
    print(f"{len(prompts)} prompts of {n_users} users, both views (+{len(warmup)} warm-up "
          f"prompts of other users, untimed); mean {np.mean(lengths):.0f} tokens (min "
          f"{min(lengths)}, max {max(lengths)}); {args.model}: {shape['non_embedding_params']:,} "
          f"non-embedding parameters, folder dtype {shape['config_dtype']}; rater dtype "
          f"{'/'.join(dtypes)} ({resolve_dtype(args.dtype)[1] if args.dtype != 'both' else 'both'}"
          f"); max_tokens {args.max_tokens}; {os.cpu_count()} CPUs, flags "
          f"{' '.join(cpu['flags'])}, torch {cpu['torch_cpu_capability']}, "
          f"{cpu['torch_threads']} threads; ideal prefix reuse in this order "
          f"{reuse['token_share']:.0%} of prompt tokens ({reuse['block_share']:.0%} in whole "
          f"blocks of {args.block_size})", flush=True)
    tokens = [int(t) for t in args.matmul_tokens.split(",")]
    measured: dict[str, list] = {}
    measure_bounds(shape, bound_dtypes, tokens, measured)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        prompts_file = tmp / "prompts.json"
        prompts_file.write_text(json.dumps({"prompts": prompts, "warmup": warmup,
                                            "items": items, "work": work,
                                            "warm_work": warm_work}))
        for kind, dt in runs:
            key = kind if len(dtypes) == 1 or kind == "loop" else f"{kind}_{dt}"
            results[key] = spawn(kind, dt, args, prompts_file, tmp)
        if args.embed and not args.no_embed:
            for kind in ("embed-vllm", "embed-st"):
                results[kind] = spawn(kind, "float32", args, prompts_file, tmp)
    measure_bounds(shape, bound_dtypes, tokens, measured)  # again: the load may have changed
    bounds = {dt: max(m["flop_per_s"] for m in ms) for dt, ms in measured.items()}
    report(args, results, bounds, measured, shape, cpu, lengths, reuse)


def report(args, results, bounds, measured, shape, cpu, lengths, reuse) -> None:
    loop = results.get("loop", {}).get("per_s")
    figs = {k: figures_of(r, loop, bounds, shape["non_embedding_params"])
            for k, r in results.items() if not k.startswith("embed-")}
    rows = [[k, f["dtype"], f["judgments_per_s"], f["x_loop"], f["start_s"],
             f["prompt_tokens_per_judgment"], f["prefix_cache_hit_share"],
             f["unique_tokens_per_judgment"], f["achieved_flop_per_s"] / 1e9,
             f["flop_fraction"], f"{f['failures']}/{f['n']}"] for k, f in figs.items()]
    print_table(["rater", "dtype", "judgments/s", "x loop", "start s", "prompt tok/j",
                 "cache hit", "unique tok/j", "GFLOP/s", "of bound", "failures"], rows,
                title="Rating (timed part; GFLOP/s = 2 x non-embedding params x unique tokens/s)",
                digits=2)
    print_table(["dtype", "bound GFLOP/s", *[f"M={m}" for m in measured[next(iter(measured))][0]
                                               ["by_tokens"]]],
                [[dt, bounds[dt] / 1e9, *[max(m["by_tokens"][t] for m in ms) / 1e9
                                          for t in ms[0]["by_tokens"]]]
                 for dt, ms in measured.items()],
                title="Matmul bound (one decoder layer's linears; best of F.linear and oneDNN, of "
                      "before and after the raters)", digits=1)
    agree = {}
    keys = [k for k in figs if not k.startswith("likelihood")]
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            tol = max(PROB_TOL.get(figs[a]["dtype"], 1e-2), PROB_TOL.get(figs[b]["dtype"], 1e-2))
            agree[f"{a}~{b}"] = agreement(results[a], results[b], tol)
    if agree:
        print_table(["raters", "argmax agree", "same label", "max |dp|", "tolerance", "ok"],
                    [[k, g.get("argmax_agree"), g.get("same_label"), g.get("max_abs_prob_diff"),
                      g["tolerance"], g["ok"]] for k, g in agree.items()],
                    title="Agreement (same prompts)", digits=6)
    out = {"judgments_per_s": {k: f["judgments_per_s"] for k, f in figs.items()},
           "x_loop": {k: f["x_loop"] for k, f in figs.items() if k != "loop"},
           "flop_fraction": {k: f["flop_fraction"] for k, f in figs.items()},
           "dtype": {k: f["dtype"] for k, f in figs.items()},
           "dtype_reason": {k: f["dtype_reason"] for k, f in figs.items()},
           "prefix_cache_hit_share": {k: f["prefix_cache_hit_share"] for k, f in figs.items()},
           "unique_tokens_per_judgment": {k: f["unique_tokens_per_judgment"]
                                          for k, f in figs.items()},
           "matmul_bound_flop_per_s": bounds, "achieved_flop_per_s":
               {k: f["achieved_flop_per_s"] for k, f in figs.items()},
           "agreement": agree, "agreement_ok": all(g["ok"] for g in agree.values()),
           "ideal_prefix_reuse": reuse,
           "prompts": len(lengths), "loop_prompts": results.get("loop", {}).get("n"),
           "mean_prompt_tokens": float(np.mean(lengths)),
           "max_tokens": args.max_tokens, "block_size": args.block_size,
           "non_embedding_params": shape["non_embedding_params"], "cpus": os.cpu_count(),
           "cpu": cpu, "raters": figs}
    vllm = [k for k in figs if k.startswith("vllm")]
    for k in vllm:
        f = figs[k]
        print(f"{k}: {f['x_loop']:.2f}x the plain loop (target >= 10x: "
              f"{'met' if f['x_loop'] >= 10 else 'NOT met'}), {f['flop_fraction']:.0%} of the "
              f"matmul bound (target >= 50%: {'met' if f['flop_fraction'] >= 0.5 else 'NOT met'})")
    lik = [k for k in figs if k.startswith("likelihood")]
    # the judge to beat: vLLM where it ran (the default backend), else transformers
    judge = {figs[k]["dtype"]: k for k in sorted(figs, key=lambda k: k.startswith("vllm"))
             if k.startswith("vllm") or k.startswith("transformers")}
    for k in lik:
        base = judge.get(figs[k]["dtype"])
        if base:
            x = figs[k]["judgments_per_s"] / figs[base]["judgments_per_s"]
            out.setdefault("likelihood_x_judge", {})[k] = x
            print(f"{k}: {x:.2f}x the judge ({base}) in judgments/s (target >= 5x: "
                  f"{'met' if x >= 5 else 'NOT met'})")
    if "likelihood-transformers" in results and "likelihood-vllm" in results:
        a = np.array([np.nan if s is None else s for s in results["likelihood-transformers"]["scores"]])
        b = np.array([np.nan if s is None else s for s in results["likelihood-vllm"]["scores"]])
        out["likelihood_max_abs_score_diff"] = float(np.nanmax(np.abs(a - b)))
        print(f"likelihood reader, transformers vs vLLM: max |score difference| "
              f"{out['likelihood_max_abs_score_diff']:.4f}")
    if "lora-request" in results and "lora-merged" in results:
        out["lora_merged_x_request"] = results["lora-merged"]["per_s"] / \
            results["lora-request"]["per_s"]
        print(f"merged LoRA / LoRARequest = {out['lora_merged_x_request']:.2f}x")
    if "embed-vllm" in results:
        va = np.asarray(results["embed-vllm"]["vectors"])
        vb = np.asarray(results["embed-st"]["vectors"])
        cos = (va * vb).sum(1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
        for kind in ("embed-vllm", "embed-st"):
            out[kind] = {"texts_per_s": results[kind]["per_s"], "n": results[kind]["n"],
                         "start_s": results[kind]["start_s"]}
        out["embed_min_cosine"] = float(cos.min())
        print(f"embedding: vLLM {out['embed-vllm']['texts_per_s']:.1f} texts/s, "
              f"sentence-transformers {out['embed-st']['texts_per_s']:.1f}; min cosine "
              f"{cos.min():.6f}")
    emit_json(out)


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        worker(ARGS)
    else:
        main(ARGS)
