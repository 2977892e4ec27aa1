"""sentence-transformers embeddings, with pooling and normalisation set explicitly.

The model is assembled from modules (``Transformer`` -> ``Pooling`` -> optional ``Normalize``)
rather than from the folder's ``modules.json``, so the settings, not whatever the folder says,
decide pooling and normalisation; vLLM's pooling runner gets the same settings.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmhni_local.backends.transformers_backend import torch_dtype
from llmhni_local.core.offline import enforce_offline
from llmhni_local.engine.api import Embedder
from llmhni_local.engine.settings import EmbedderSettings
from llmhni_local.weights.registry import EMBEDDER_NEEDS, model_id, resolve_checked, text_limit

_MODES = {"mean": "mean", "cls": "cls", "last": "lasttoken"}


class SentenceTransformersEmbedder(Embedder):
    """Embeds texts with a sentence-transformers model assembled from the settings."""

    def __init__(self, settings: EmbedderSettings) -> None:
        self.model: Any = None
        super().__init__()  # tracked: a stopped process closes it
        self.settings = settings
        self.spec = resolve_checked(settings.model, EMBEDDER_NEEDS)
        self.model_id = model_id(self.spec)
        enforce_offline()
        from sentence_transformers import SentenceTransformer

        path, dtype = str(self.spec.path), torch_dtype(settings.dtype)
        max_len = text_limit(path, settings.max_model_len)
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
        pool = st.Pooling(dim, pooling_mode=_MODES[settings.pooling])
        modules: list[Any] = [word, pool]
        if settings.normalize:
            modules.append(st.Normalize())
        self.model = SentenceTransformer(modules=modules, device="cpu")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, 0), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=self.settings.batch_size,
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
