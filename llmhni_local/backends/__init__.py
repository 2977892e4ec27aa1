"""Rating and embedding backends behind one contract (``llmhni_local.engine.api``: every
rating backend is a :class:`~llmhni_local.engine.api.Rater`, every embedding backend an
:class:`~llmhni_local.engine.api.Embedder`).

``make_rating_backend(settings)`` and ``make_embedding_backend(settings)`` pick the backend
named in the settings from :data:`RATING_BACKENDS` / :data:`EMBEDDING_BACKENDS`: one row per
backend (its module, class and a one-line description), from which the factory, the allowed
values and the help text all come. A new backend is a module here plus one row. Every check
(model known, folder complete, adapter valid, label tokens distinct, base URL acceptable) runs
before an engine starts. Backends hold an engine or a connection: call ``close()`` (or use them
in a ``with`` block) when done.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

from llmhni_local.backends.probe_backend import ProbeRater
from llmhni_local.core.errors import ConfigError
from llmhni_local.engine.api import Embedder, Rater
from llmhni_local.engine.settings import EmbedderSettings, RaterSettings
from llmhni_local.weights.registry import is_probe_folder


@dataclass(frozen=True)
class BackendEntry:
    """One backend: where its class lives (imported only when chosen) and what it is."""

    module: str
    cls: str
    help: str

    def load(self) -> type:
        return getattr(importlib.import_module(f"llmhni_local.backends.{self.module}"),
                       self.cls)


#: Rating backends by the name ``rater.backend`` takes.
RATING_BACKENDS: dict[str, BackendEntry] = {
    "vllm": BackendEntry("vllm_backend", "VllmRater", "in-process vLLM engine"),
    "transformers": BackendEntry("transformers_backend", "TransformersRater", "plain PyTorch"),
    "openai": BackendEntry("openai_backend", "OpenAIRater",
                           "an OpenAI-compatible server the user runs"),
}

#: Embedding backends by the name ``embedder.backend`` takes.
EMBEDDING_BACKENDS: dict[str, BackendEntry] = {
    "vllm": BackendEntry("vllm_backend", "VllmEmbedder", "vLLM pooling runner"),
    "sentence-transformers": BackendEntry("st_backend", "SentenceTransformersEmbedder",
                                          "sentence-transformers in process"),
    "openai": BackendEntry("openai_backend", "OpenAIEmbedder",
                           "an OpenAI-compatible server the user runs"),
}


def backend_help(table: dict[str, BackendEntry]) -> str:
    """``name (what), ...`` for command-line help."""
    return ", ".join(f"{name} ({e.help})" for name, e in table.items())


def _entry(table: dict[str, BackendEntry], name: str, setting: str) -> BackendEntry:
    if name not in table:
        raise ConfigError(f"{setting}: unknown backend {name!r} (known: {', '.join(table)})")
    return table[name]


def rating_backend_class(name: str) -> type[Rater]:
    """The class of rating backend ``name`` (imports its module, starts nothing); its
    ``serves(kind)`` says which request types it answers."""
    return _entry(RATING_BACKENDS, name, "rater.backend").load()


def make_rating_backend(settings: RaterSettings | None = None, **overrides: Any) -> Rater:
    """A rating backend for ``settings`` (defaults, then ``overrides`` as keyword settings)."""
    settings = settings or RaterSettings()
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    if settings.adapter:
        if is_probe_folder(settings.adapter):  # a probe folder has its own backend

            return ProbeRater(settings)
    return rating_backend_class(settings.backend)(settings)


def make_embedding_backend(settings: EmbedderSettings | None = None,
                           **overrides: Any) -> Embedder:
    """An embedding backend for ``settings`` (defaults, then ``overrides``)."""
    settings = settings or EmbedderSettings()
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    return _entry(EMBEDDING_BACKENDS, settings.backend, "embedder.backend").load()(settings)
