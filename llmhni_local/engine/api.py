"""The contract every LLM backend implements (vllm, openai, transformers).

A rating backend turns chat prompts into label judgments: the generated text (kept raw) and the
probability of each label read from the next-token log-probabilities at the answer position;
the label is the most likely one there (``rater.decide = "likelihood"``) or the one the text
names (``"parse"``). An embedding backend turns texts into vectors. Backends never default a
label: an answer that is not a label is returned with ``label=None`` and counted as a failure
upstream (so is a likelihood choice whose label mass is below ``rate.min_label_mass``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

LABELS: tuple[str, ...] = ("High", "Medium", "Low")


@dataclass(frozen=True)
class Judgment:
    """One rated prompt.

    Args:
        text: the raw generated answer (with ``rater.max_tokens = 1`` just the label token).
        label: the label: the most likely one at the answer position (``decided_by =
            "likelihood"``) or the one parsed from ``text`` (``"parse"``); ``None`` when there
            is none (no probabilities, or the text is not a label).
        probs: probability of each label from the answer position's log-probabilities,
            renormalised over the labels; ``None`` when the backend could not read them.
        label_mass: total probability the model put on the label tokens before
            renormalising (how much the model "wanted" to answer with a label).
        score: the likelihood reader's relevance score (``rate.mode = "likelihood"``:
            ``log p(name | view context) - log p(name | neutral context)``); such a judgment
            has no label and no probabilities. ``None`` for a label judgment, or where the
            score could not be read (a counted failure).
    """

    text: str
    label: str | None
    probs: dict[str, float] | None
    label_mass: float | None = None
    decided_by: str = "parse"  # "likelihood": rate.min_label_mass applies to it
    score: float | None = None


class RatingBackend(Protocol):
    model_id: str  # stable id of the model (and adapter) used in the judgment store

    def rate(self, prompts: Sequence[list[dict[str, str]]]) -> list[Judgment]:
        """Judge each chat prompt (a list of ``{"role", "content"}`` messages)."""
        ...

    def close(self) -> None: ...


class EmbeddingBackend(Protocol):
    model_id: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors (pooling / normalisation per settings)."""
        ...

    def close(self) -> None: ...


def check_vectors(vecs: object, n: int, what: str, start: int) -> np.ndarray:
    """The backend's answer for ``n`` texts from ``start`` as float32, or a DataError."""
    import numpy as np

    from llmhni_local.core.errors import DataError

    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[0] != n:
        raise DataError(f"embedder returned shape {vecs.shape} for {n} {what}")
    if not np.isfinite(vecs).all():
        raise DataError(f"embedder returned non-finite values for {what} "
                        f"{start}..{start + n - 1}")
    return vecs
