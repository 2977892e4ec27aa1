"""Typed, frozen settings of the LLM engines (the ``[rater]``, ``[embedder]`` and ``[embed]``
tables) and of tuning the rater inside a run (``[tune]``).

``rater.dtype = "auto"`` is resolved from the hardware by ``core/precision.py``. vLLM on a CPU also
reads two environment variables, defaulted by the vLLM backends when unset:
``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache; default here 1, enough for SmolLM2-135M at batch
64 x 1,024 tokens; raise it for larger models) and ``VLLM_CPU_NUM_OF_RESERVED_CPU`` (default
here 0: on 2 cores reserving one for the engine's own loop costs ~40% throughput).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmhni_local.core.config import DEVICE_SPELLING
from llmhni_local.core.errors import ConfigError

Dtype = Literal["bfloat16", "float32", "float16", "auto"]


@dataclass(frozen=True)
class RaterSettings:
    """The rating LLM (dual rating, stage 6).

    Args:
        backend: ``vllm`` (in-process engine), ``transformers`` (plain PyTorch) or ``openai``
            (an OpenAI-compatible server such as ``vllm serve``, at ``base_url``).
            (default: ``"vllm"``)
        model: registry name (``smollm2``), Hugging Face folder or prepared GGUF file. With
            ``openai`` the local copy supplies the tokenizer and chat template (so the server
            receives exactly the text the other backends would) and must be the model the
            server serves. (default: ``"smollm2"``)
        dtype: weights and activations: ``auto``, ``bfloat16``, ``float16`` or ``float32``.
            ``auto`` is resolved by ``core/precision.py`` (``resolve_dtype``): bfloat16 on CUDA and
            on CPUs with AVX-512 BF16 or AMX (about 2x float32 there), float32 on other CPUs
            (where bf16 is emulated and ran ~13x slower, docs/BENCHMARKS.md). The choice and
            its reason are logged and written to ``rating.json``. Set ``float32`` for results
            that agree across machines to ~1e-5. (default: ``"auto"``)
        device: where the ``transformers`` backend (and a probe's state pass) runs the model:
            ``auto`` (CUDA when torch sees a GPU), ``cpu``, ``cuda`` or ``cuda:N``; an explicit
            GPU this machine lacks is a one-line error before the weights load. vLLM places
            its engine by its own build. (default: ``"auto"``)
        decide: how the label is chosen. ``likelihood``: the label whose token is most likely
            at the answer position, right after the template's answer cue (multiple-choice
            style, one forward pass; a label mass below ``rate.min_label_mass`` is a counted
            failure). ``parse``: the label the generated text names (``labels.parse_label``;
            needs ``max_tokens`` large enough to write it). Rows decided by ``parse`` are
            stored under a model id ending ``+parse``, apart from likelihood rows.
            (default: ``"likelihood"``)
        max_tokens: greedy tokens generated per prompt, kept raw beside the probabilities. 1
            is one forward pass over the prompt: the label is read at the first generated
            position, which is all ``likelihood`` needs; more tokens are for inspecting free
            answers (and for ``parse``). (default: ``1``)
        batch_size: prompts per forward pass (transformers) or per HTTP request (openai);
            vLLM receives every prompt of a ``rate`` call at once and schedules them itself.
            (default: ``64``)
        base_url: the OpenAI-compatible server (``openai`` only). Nothing else is ever
            contacted. (default: ``"http://127.0.0.1:8000/v1"``)
        served_model: the model name on the server (``openai`` only); ``None`` takes the one
            model the server lists at ``/v1/models``. (default: ``None``)
        adapter: a peft LoRA adapter folder applied on top of ``model``; it becomes part of
            ``model_id``. (default: ``None``)
        lora_mode: how the ``vllm`` backend applies ``adapter``. ``request``: the engine runs
            with ``enable_lora`` and every prompt carries a ``LoRARequest`` (vLLM's way; fast
            on a GPU). ``merged``: the adapter is folded into a cached copy of the base
            weights (``weights/lora_merge.py``) that the engine serves as a plain model: vLLM's CPU
            LoRA kernels rated 0.52 judgments/s per request against 4.17/s merged on the
            2-core test machine (``bench/rating_throughput.py --adapter``). Both give the
            same judgments (tested to 1e-4) under the same model id. ``auto``: ``merged``
            without a CUDA device, else ``request``.
            (default: ``"auto"``)
        max_model_len: longest prompt plus answer, in tokens (bounds vLLM's KV cache per
            sequence). (default: ``1024``)
        block_size: vLLM KV-cache block size in tokens; the CPU build reuses only whole blocks
            of a shared prefix, so 32 reuses 62% of prompt tokens where 128 reuses 41%
            (``rating.json`` reports the share per run). (default: ``32``)
        seed: engine seed (decoding is greedy; this only fixes anything random at start-up).
            (default: ``0``)
        timeout_s: seconds an HTTP request may take (``openai`` only). (default: ``600.0``)
        tensor_parallel_size: GPUs one vLLM engine splits the model over (``vllm`` only).
            (default: ``1``)
        data_parallel_size: model replicas of one vLLM engine (``vllm`` only). vLLM 0.32's
            in-process engine refuses values above 1 (it needs one process per replica);
            serve replicas with ``vllm serve --data-parallel-size N`` and the ``openai``
            backend instead. (default: ``1``)
    """

    backend: Literal["vllm", "transformers", "openai"] = "vllm"
    model: str = "smollm2"
    dtype: Dtype = "auto"
    device: str = "auto"
    decide: Literal["likelihood", "parse"] = "likelihood"
    max_tokens: int = 1
    batch_size: int = 64
    base_url: str = "http://127.0.0.1:8000/v1"
    served_model: str | None = None
    adapter: str | None = None
    lora_mode: Literal["auto", "request", "merged"] = "auto"
    max_model_len: int = 1024
    block_size: int = 32
    seed: int = 0
    timeout_s: float = 600.0
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(f"rater.dtype must be auto, bfloat16, float16 or float32, got "
                              f"{self.dtype!r}")

        if not DEVICE_SPELLING.fullmatch(str(self.device)):
            raise ConfigError(f"rater.device must be auto, cpu, cuda or cuda:N, got "
                              f"{self.device!r}")
        if self.decide not in ("likelihood", "parse"):
            raise ConfigError(f"rater.decide must be likelihood or parse, got {self.decide!r}")
        for name in ("tensor_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rater.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens < 1:
            raise ConfigError(f"rater.max_tokens must be >= 1, got {self.max_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"rater.batch_size must be >= 1, got {self.batch_size}")
        if self.max_model_len < 16:
            raise ConfigError(f"rater.max_model_len must be >= 16, got {self.max_model_len}")
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"rater.block_size must be a power of two, got {self.block_size}")
        if self.timeout_s <= 0:
            raise ConfigError(f"rater.timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class EmbedderSettings:
    """The frozen text encoder (semantic encoding, stage 2).

    Args:
        backend: ``vllm`` (pooling runner), ``sentence-transformers`` or ``openai``
            (``/v1/embeddings`` of a server at ``base_url``). (default: ``"vllm"``)
        model: registry name (``minilm``) or Hugging Face folder. (default: ``"minilm"``)
        pooling: how token vectors become one vector: ``mean`` (all-MiniLM-L6-v2 was trained
            with it), ``cls`` or ``last``. (default: ``"mean"``)
        normalize: scale every vector to unit length (cosine = dot product). (default: ``True``)
        batch_size: texts per call (sentence-transformers, openai); vLLM schedules all texts
            of a call itself. (default: ``256``)
        dtype: weights and activations (a 22M-parameter encoder: fp32 costs little).
            (default: ``"float32"``)
        max_model_len: longest text in tokens; longer texts keep their first tokens. ``None``
            takes the model's own limit (``sentence_bert_config.json``'s ``max_seq_length``,
            else ``max_position_embeddings``: 256 for all-MiniLM-L6-v2), the same for every
            backend. (default: ``None``)
        base_url: the OpenAI-compatible server (``openai`` only). (default:
            ``"http://127.0.0.1:8000/v1"``)
        served_model: the model name on the server (``openai`` only); ``None`` takes the one
            model the server lists. (default: ``None``)
        seed: engine seed. (default: ``0``)
        timeout_s: seconds an HTTP request may take (``openai`` only). (default: ``600.0``)
        modules: what makes the ``sentence-transformers`` backend's model: ``model`` loads a
            folder's ``modules.json`` stack whole (Dense layers included), and ``pooling`` /
            ``normalize`` must agree with its Pooling module and whether it ends in
            Normalize; a folder without ``modules.json`` is assembled from the settings.
            ``settings``: always Transformer -> Pooling -> optional Normalize from the
            settings. (vLLM applies a folder's Dense modules itself either way.)
            (default: ``"model"``)
        user_prompt: name of one of the model's prompts (``config_sentence_transformers.json``
            ``prompts``, e.g. EmbeddingGemma's ``query``) put before every user profile
            (sentence-transformers: ``encode(prompt=...)``; vllm, openai: prepended to the
            text); ``None``: none. (default: ``None``)
        item_prompt: the same for item profiles (e.g. ``document``). (default: ``None``)
    """

    backend: Literal["vllm", "sentence-transformers", "openai"] = "vllm"
    model: str = "minilm"
    pooling: Literal["mean", "cls", "last"] = "mean"
    normalize: bool = True
    batch_size: int = 256
    dtype: Dtype = "float32"
    max_model_len: int | None = None
    base_url: str = "http://127.0.0.1:8000/v1"
    served_model: str | None = None
    seed: int = 0
    timeout_s: float = 600.0
    modules: Literal["model", "settings"] = "model"
    user_prompt: str | None = None
    item_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"embedder.batch_size must be >= 1, got {self.batch_size}")
        if self.max_model_len is not None and self.max_model_len < 8:
            raise ConfigError(f"embedder.max_model_len must be >= 8, got {self.max_model_len}")
        if self.modules not in ("model", "settings"):
            raise ConfigError(f"embedder.modules must be model or settings, got {self.modules!r}")


#: Fields added to ``[embedder]`` after run folders were keyed, with their defaults: at its
#: default a field stays out of the embed stage's key and of ``embed_key``, so vectors saved
#: before it existed stay reused (``stages/key.py``, ``text/embed.py``).
EMBEDDER_ADDED: dict[str, object] = {f: getattr(EmbedderSettings(), f)
                                     for f in ("modules", "user_prompt", "item_prompt")}


@dataclass(frozen=True)
class EmbedSettings:
    """Where the ``embed`` stage runs (the ``[embed]`` table). Not part of the vectors' reuse
    key: the engine does not change the vectors (tested to 1e-6), so vectors computed one way
    are reused the other.

    Args:
        engine: ``inprocess`` (one embedding backend in this process) or ``ray`` (a Ray Data
            job, one backend per worker; the vectors come back to this process, which writes
            them exactly as in process; ``text/ray_embed.py``, docs/RAY.md).
            (default: ``"inprocess"``)
        ray_address: the Ray cluster for ``engine = "ray"`` (``host:port``,
            ``ray://host:port`` or ``auto``); ``None`` takes ``RAY_ADDRESS`` and, without it,
            starts a local cluster on this machine. (default: ``None``)
    """

    engine: Literal["inprocess", "ray"] = "inprocess"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ("inprocess", "ray"):
            raise ConfigError(f"embed.engine must be inprocess or ray, got {self.engine!r}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ConfigError("embed.ray_address must not be empty (None: RAY_ADDRESS or a "
                              "local cluster)")
