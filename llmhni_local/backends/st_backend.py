"""sentence-transformers embeddings: the model folder's own module stack, or one assembled from
the settings.

``embedder.modules = "model"`` (default): a folder with ``modules.json`` is loaded whole, as
sentence-transformers' ``SentenceTransformer(folder)`` would (EmbeddingGemma's two Dense
layers after its Pooling, for instance); ``embedder.pooling`` and ``embedder.normalize`` must
then say what the folder does (its Pooling module's mode; whether its stack ends in
Normalize), else a one-line ConfigError, so the settings recorded beside the vectors never
misstate them. A folder without ``modules.json`` (a plain Hugging Face encoder), or
``modules = "settings"``, is assembled from the settings: ``Transformer`` -> ``Pooling`` ->
optional ``Normalize``; vLLM's pooling runner gets the same pooling and normalisation.

A prompt goes to ``encode(prompt=...)``, so a Pooling module with ``include_prompt = False``
leaves the prompt's tokens out of the mean, as the model was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmhni_local.backends.transformers_backend import torch_dtype
from llmhni_local.core.errors import ConfigError
from llmhni_local.core.offline import enforce_offline
from llmhni_local.engine.api import Embedder
from llmhni_local.engine.settings import EmbedderSettings
from llmhni_local.weights.registry import EMBEDDER_NEEDS, model_id, resolve_checked, text_limit

_MODES = {"mean": "mean", "cls": "cls", "last": "lasttoken"}


class SentenceTransformersEmbedder(Embedder):
    """Embeds texts with a sentence-transformers model: the folder's stack or the settings'."""

    def __init__(self, settings: EmbedderSettings) -> None:
        self.model: Any = None
        super().__init__()  # tracked: a stopped process closes it
        self.settings = settings
        self.spec = resolve_checked(settings.model, EMBEDDER_NEEDS)
        self.model_id = model_id(self.spec)
        enforce_offline()
        path = str(self.spec.path)
        if settings.modules == "model" and (Path(path) / "modules.json").is_file():
            self.model = _load_stack(path, settings)
        else:
            self.model = _assemble(path, settings)

    def embed(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """See :meth:`Embedder.embed`; the prompt goes to ``encode(prompt=...)``."""
        if not len(texts):
            return np.zeros((0, 0), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=self.settings.batch_size,
                                 # "" rather than None: never the folder's default_prompt_name
                                 prompt=prompt or "",
                                 convert_to_numpy=True, show_progress_bar=False,
                                 normalize_embeddings=False)  # the Normalize module decides
        return np.asarray(vecs, dtype=np.float32)

    @property
    def dtype_choice(self) -> dict[str, str]:
        return {"requested": self.settings.dtype, "dtype": self.settings.dtype,
                "reason": "embedder.dtype"}

    def close(self) -> None:
        self.model = None
        super().close()


def _load_stack(path: str, settings: EmbedderSettings) -> Any:
    """The folder's ``modules.json`` stack, checked against ``pooling`` / ``normalize``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu", local_files_only=True,
                                model_kwargs={"dtype": torch_dtype(settings.dtype)})
    model.max_seq_length = text_limit(path, settings.max_model_len)
    st = _st_modules()
    pools = [m for m in model if isinstance(m, st.Pooling)]
    mode = _pooling_mode(pools[0]) if len(pools) == 1 else None
    if mode != _MODES[settings.pooling]:
        _disagree(settings, "pooling", settings.pooling,
                  f"pools by {mode!r}" if mode else f"has {len(pools)} Pooling modules")
    ends = isinstance(model[-1], st.Normalize)
    if ends != settings.normalize:
        _disagree(settings, "normalize", settings.normalize,
                  "ends in Normalize" if ends else "does not end in Normalize")
    return model


def _disagree(settings: EmbedderSettings, field: str, value: Any, folder_says: str) -> None:
    raise ConfigError(f"embedder.{field} = {value!r}, but {settings.model}'s modules.json stack "
                      f"{folder_says}; set embedder.{field} to match, or embedder.modules = "
                      '"settings" to assemble the model from the settings instead')


def _assemble(path: str, settings: EmbedderSettings) -> Any:
    """Transformer -> Pooling -> optional Normalize, from the settings."""
    from sentence_transformers import SentenceTransformer

    dtype, max_len = torch_dtype(settings.dtype), text_limit(path, settings.max_model_len)
    try:  # sentence-transformers 6 moved the modules and renamed their arguments
        from sentence_transformers.sentence_transformer import modules as st

        word = st.Transformer(path, max_seq_length=max_len,
                              model_kwargs={"dtype": dtype, "local_files_only": True},
                              processor_kwargs={"local_files_only": True},
                              config_kwargs={"local_files_only": True})
        dim = word.get_embedding_dimension()
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as st

        word = st.Transformer(path, max_seq_length=max_len,
                              model_args={"torch_dtype": dtype, "local_files_only": True},
                              tokenizer_args={"local_files_only": True})
        dim = word.get_word_embedding_dimension()
    modules: list[Any] = [word, st.Pooling(dim, pooling_mode=_MODES[settings.pooling])]
    if settings.normalize:
        modules.append(st.Normalize())
    return SentenceTransformer(modules=modules, device="cpu")


def _st_modules() -> Any:
    """sentence-transformers' module classes (``Transformer``, ``Pooling``, ``Normalize``)."""
    try:  # sentence-transformers 6 moved the modules
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules
    return modules


def _pooling_mode(pool: Any) -> str:
    """A Pooling module's mode as one name (several modes, concatenated, joined by ``+``)."""
    try:  # sentence-transformers 6 keeps the mode itself
        mode = pool.pooling_mode
    except AttributeError:  # sentence-transformers < 6: flags, read back as a string
        return pool.get_pooling_mode_str()
    return mode if isinstance(mode, str) else "+".join(mode)
