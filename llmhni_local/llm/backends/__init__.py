"""Rating and embedding backends behind one interface (``llmhni_local.llm.base``).

``make_rating_backend(settings)`` and ``make_embedding_backend(settings)`` pick the backend
named in the settings. Every check (model known, folder complete, adapter valid, label tokens
distinct, base URL acceptable) runs before an engine starts. Backends hold an engine or a
connection: call ``close()`` (or use them in a ``with`` block) when done.
"""

from __future__ import annotations

from typing import Any

from llmhni_local.errors import ConfigError
from llmhni_local.llm.base import EmbeddingBackend, RatingBackend
from llmhni_local.llm.settings import EmbedderSettings, RaterSettings


def make_rating_backend(settings: RaterSettings | None = None, **overrides: Any) -> RatingBackend:
    """A rating backend for ``settings`` (defaults, then ``overrides`` as keyword settings)."""
    import dataclasses

    settings = settings or RaterSettings()
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    if settings.backend == "vllm":
        from llmhni_local.llm.backends.vllm_backend import VllmRater

        return VllmRater(settings)
    if settings.backend == "transformers":
        from llmhni_local.llm.backends.transformers_backend import TransformersRater

        return TransformersRater(settings)
    if settings.backend == "openai":
        from llmhni_local.llm.backends.openai_backend import OpenAIRater

        return OpenAIRater(settings)
    raise ConfigError(f"rater.backend: unknown backend {settings.backend!r}")


def make_embedding_backend(settings: EmbedderSettings | None = None,
                           **overrides: Any) -> EmbeddingBackend:
    """An embedding backend for ``settings`` (defaults, then ``overrides``)."""
    import dataclasses

    settings = settings or EmbedderSettings()
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    if settings.backend == "vllm":
        from llmhni_local.llm.backends.vllm_backend import VllmEmbedder

        return VllmEmbedder(settings)
    if settings.backend == "sentence-transformers":
        from llmhni_local.llm.backends.st_backend import SentenceTransformersEmbedder

        return SentenceTransformersEmbedder(settings)
    if settings.backend == "openai":
        from llmhni_local.llm.backends.openai_backend import OpenAIEmbedder

        return OpenAIEmbedder(settings)
    raise ConfigError(f"embedder.backend: unknown backend {settings.backend!r}")
