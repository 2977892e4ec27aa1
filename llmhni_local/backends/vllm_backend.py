"""vLLM in-process: the default rating and embedding backend.

Rating is greedy decoding of ``max_tokens`` tokens (1 by default: one forward pass over the
prompt); the label probabilities come from the first generated position's log-probabilities of
the label tokens, which follow the template's answer cue (``vllm_compat`` says how they are
read on this vLLM). Prompts go in as token ids rendered by ``chat.py``, all of a ``judge`` call
at once and in the given order, so the engine batches them and reuses the KV blocks of the
shared prefix; ``token_stats()`` counts prompt tokens and prefix-cache hits. vLLM starts its
engine with multiprocessing spawn: code that builds one must run under
``if __name__ == "__main__":``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmhni_local.backends import vllm_compat as compat
from llmhni_local.backends.common import RaterCore, prompts_of
from llmhni_local.core.errors import ConfigError
from llmhni_local.engine.api import Embedder, JudgeRequest, Judgment
from llmhni_local.engine.chat import Messages
from llmhni_local.engine.settings import EmbedderSettings, RaterSettings
from llmhni_local.weights.lora_merge import merge_adapter
from llmhni_local.weights.registry import EMBEDDER_NEEDS, model_id, resolve_checked, text_limit


class VllmRater(RaterCore):
    """Rates chat prompts with an in-process vLLM engine (optionally with a LoRA adapter)."""

    def __init__(self, settings: RaterSettings) -> None:
        self.llm: Any = None  # until the engine is up (close() may come first)
        super().__init__(settings)  # every check before the engine starts
        compat.check_parallel(settings.tensor_parallel_size, settings.data_parallel_size)
        path, adapter = self.spec.path, self.adapter
        self.lora_mode = compat.lora_mode(settings.lora_mode) if adapter is not None else None
        if self.lora_mode == "merged":
            path, adapter = merge_adapter(path, adapter), None  # a plain model: no LoRA kernels
        self.llm: Any = compat.make_generator(
            path, dtype=self.dtype, max_model_len=settings.max_model_len,
            block_size=settings.block_size, seed=settings.seed, adapter=adapter,
            tensor_parallel_size=settings.tensor_parallel_size,
            data_parallel_size=settings.data_parallel_size)
        self._params: dict[tuple[int, ...], Any] = {}
        self._lora = compat.lora_request(adapter.name, adapter) if adapter is not None else None
        self.cached_known = True

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        prompts = prompts_of(requests)
        if not prompts:
            return []
        if self.needs_sequences(prompts):
            return self.rate_sequences(prompts)
        maps = self.labels_for(prompts)
        wanted = tuple(self.wanted(maps))
        if wanted not in self._params:
            self._params[wanted] = compat.label_sampling_params(self.settings.max_tokens, wanted)
        ids = self.prompt_ids(self.prompt_texts(prompts))
        results = compat.generate(self.llm, ids, self._params[wanted], wanted, lora=self._lora,
                                  stats=self.counts)
        self.counts["prompts"] += len(prompts)
        return self.judgments(results, maps)

    def loglikelihood_ids(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Summed continuation log-probabilities from vLLM's prompt log-probabilities of
        ``context + continuation`` (``vllm_compat.prompt_loglikelihoods``). vLLM does not read
        the prefix cache for such requests, so every token of every request is computed."""
        if not requests:
            return []
        return compat.prompt_loglikelihoods(self.llm, requests, lora=self._lora,
                                            stats=self.counts)

    def generate(self, prompts: Sequence[Messages], max_tokens: int) -> list[str]:
        """Free greedy generation (e.g. profile summaries), same prompt rendering."""
        if not prompts:
            return []
        ids = self.prompt_ids(self.prompt_texts(prompts))
        params = compat.greedy_params(max_tokens)
        return [text for text, _ in compat.generate(self.llm, ids, params, [], lora=self._lora)]

    def close(self) -> None:
        llm, self.llm = self.llm, None
        compat.shutdown(llm)
        super().close()


class VllmEmbedder(Embedder):
    """Embeds texts with vLLM's pooling runner (explicit pooling and normalisation).

    vLLM applies a folder's sentence-transformers Dense modules itself (its pooler reads
    ``modules.json``). An architecture this vLLM has no model for (MPNet) is refused before
    the engine starts, naming the backend that serves it."""

    def __init__(self, settings: EmbedderSettings) -> None:
        self.llm: Any = None  # until the engine is up (close() may come first)
        super().__init__()  # tracked: a stopped process closes it
        self.settings = settings
        self.spec = resolve_checked(settings.model, EMBEDDER_NEEDS)
        self.model_id = model_id(self.spec)
        self.max_len = text_limit(self.spec.path, settings.max_model_len)
        arch = compat.unembeddable_architecture(self.spec.path)
        if arch is not None:
            raise ConfigError(f"embedder.backend = \"vllm\": this vLLM has no model for "
                              f"{arch} ({settings.model}); embedder.backend = "
                              '"sentence-transformers" serves it')
        self.llm: Any = compat.make_embedder(
            self.spec.path, pooling=settings.pooling, normalize=settings.normalize,
            dtype=settings.dtype, max_model_len=self.max_len, seed=settings.seed)

    def embed(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """See :meth:`Embedder.embed`. The prompt is put before each text as plain text (vLLM
        has no prompt argument), so its tokens always enter the pooling, and count towards
        the text limit as in sentence-transformers."""
        if not len(texts):
            return np.zeros((0, 0), dtype=np.float32)
        texts = [(prompt or "") + t for t in texts]
        return compat.embed(self.llm, texts, self.settings.normalize, self.max_len)

    @property
    def dtype_choice(self) -> dict[str, str]:
        return {"requested": self.settings.dtype, "dtype": self.settings.dtype,
                "reason": "embedder.dtype"}

    def close(self) -> None:
        llm, self.llm = self.llm, None
        compat.shutdown(llm)
        super().close()
