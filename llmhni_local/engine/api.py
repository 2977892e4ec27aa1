"""The contract every model backend implements: what it is asked, and what it answers.

A *rater* (:class:`Rater`) is read with two kinds of request, one method each:

* :class:`JudgeRequest` -> :meth:`Rater.judge` -> :class:`Judgment`: a chat prompt (one view
  of one pair) answered with a label; the generated text is kept raw and the probability of
  each label is read from the next-token log-probabilities at the answer position. The label
  is the most likely one there (``rater.decide = "likelihood"``) or the one the text names
  (``"parse"``).
* :class:`LoglikelihoodRequest` -> :meth:`Rater.loglikelihood` -> ``float``: the summed
  log-probability of a continuation (an item's name) after a context (a view's context, or
  the neutral one), as multiple-choice evaluation scores a choice; the likelihood reader
  (``judgments/likelihood.py``) is built on it.

Requests carry their view and pair, so a backend never has to guess them from the prompt.
A backend that cannot serve a request type says so with :meth:`Rater.unserved`, one line
naming the backend and the type (a probe reads no likelihoods). Free generation
(:meth:`Rater.generate`, profile summaries) is an optional extra: a backend that offers it
overrides it, and :meth:`Rater.serves` tells before any engine starts.

An *embedder* (:class:`Embedder`) turns texts into vectors, optionally each after a prompt
(one of the model's named prompts, e.g. EmbeddingGemma's ``query``).

Both hold an engine, a model or a connection: ``close()`` releases it (``with backend:``
does at the end), and every backend built is tracked until then so that a stopped process
closes it (``core/closing.py``). Backends never default a label: an answer that is not a label
is returned with ``label=None`` and counted as a failure upstream (so is a likelihood choice
whose label mass is below ``rate.min_label_mass``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from llmhni_local.core.closing import track, untrack
from llmhni_local.core.errors import DataError, UserError

LABELS: tuple[str, ...] = ("High", "Medium", "Low")

#: The request types a rater may serve (:meth:`Rater.serves`).
REQUEST_TYPES: tuple[str, ...] = ("judge", "loglikelihood", "generate")

Messages = Sequence[Mapping[str, str]]


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


@dataclass(frozen=True)
class JudgeRequest:
    """One chat prompt to judge.

    Args:
        messages: ``{"role", "content"}`` messages; a rating template's last message is the
            assistant's answer cue, after which the label is read.
        view: ``"user"`` or ``"item"``; ``None`` for a prompt outside the two views (a
            warm-up, a test), which a backend that needs the view (the probe) refuses.
        user: the pair's user index, ``None`` outside a pair.
        item: the pair's item index, ``None`` outside a pair.
    """

    messages: Messages
    view: str | None = None
    user: int | None = None
    item: int | None = None


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """``log p(continuation | context)``, summed over the continuation's tokens.

    The context is tokenised with the tokenizer's own special tokens, the continuation (which
    starts a new word, e.g. ``" Heat (1995)"``) without, and apart, so every request with the
    same context shares its tokens exactly and a backend can compute them once.

    Args:
        context: the text before (a view's context of a user, or the neutral context).
        continuation: the text scored after it (an item's name).
        view: ``"user"``, ``"item"``, or ``None`` for the neutral context.
        user: the pair's user (``None`` for the neutral context).
        item: the pair's item.
    """

    context: str
    continuation: str
    view: str | None = None
    user: int | None = None
    item: int | None = None


class _Held(abc.ABC):
    """What raters and embedders share: an id, the dtype they chose, and closing."""

    #: Stable id of the model (and adapter) that rows and vectors are stored under;
    #: ``""`` when the backend does not say (then nobody checks it against the expected id).
    model_id: str = ""

    def __init__(self) -> None:
        """Track the backend, so that a stopped process closes it; call first."""
        track(self)

    @property
    def name(self) -> str:
        """The backend's name in messages (its class name)."""
        return type(self).__name__

    @property
    def dtype_choice(self) -> dict[str, str] | None:
        """``{"requested", "dtype", "reason"}``: the dtype asked for, the one run and why;
        ``None`` (the default) when the backend does not say (``rating.json`` records it)."""
        return None

    def close(self) -> None:
        """Release the engine, model or connection; safe to call twice. The default holds
        nothing."""
        untrack(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unserved(kind: str, hint: str = ""):
    """A method for request type ``kind`` that the backend does not serve: it raises the
    one-line :class:`~llmhni_local.core.errors.UserError` of :meth:`Rater.unserved` and
    makes :meth:`Rater.serves` false for ``kind``. Use as ``loglikelihood = unserved(
    "loglikelihood")`` in a class body."""

    def method(self, *args: Any, **kwargs: Any) -> Any:
        raise self.unserved(kind, hint)

    method.__name__ = kind
    method.__doc__ = f"Not served by this backend: raises a UserError. {hint}".strip()
    method.unserved = True  # type: ignore[attr-defined]
    return method


class Rater(_Held):
    """A model read with judge and log-likelihood requests (module docstring).

    A backend subclasses this, calls ``super().__init__()`` first, and implements
    :meth:`judge` and :meth:`loglikelihood` (or assigns :func:`unserved` to the one it cannot
    serve); it may override :meth:`generate`, :meth:`close` and the properties whose defaults
    say "not known" (:attr:`dtype_choice`, :attr:`chat_form`, :meth:`token_stats`,
    :attr:`cached_known`).
    """

    #: Whether :meth:`token_stats` counts prefix-cache hits (``cached_tokens``); False: the
    #: backend cannot see them and the report says "unknown" rather than 0.
    cached_known: bool = False

    @abc.abstractmethod
    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """One :class:`Judgment` per request, in order."""

    @abc.abstractmethod
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        """Summed log-probability of each request's continuation after its context, in
        order (non-finite where the model gave none: a counted failure upstream)."""

    generate = unserved("generate", "profiles.summarize needs a backend that generates "
                                    "(vllm, transformers or openai)")
    generate.__doc__ = ("``generate(prompts, max_tokens) -> texts``: free greedy generation "
                        "of chat prompts (profile summaries). Not served unless a backend "
                        "overrides it.")

    def rate(self, prompts: Sequence[Messages]) -> list[Judgment]:
        """:meth:`judge` on bare chat prompts (no view, no pair): a shorthand for scripts."""
        return self.judge([JudgeRequest(messages=m) for m in prompts])

    @property
    def chat_form(self) -> str | None:
        """How the chat template took the system text, ``"system"`` or ``"folded"``
        (``engine/chat.py``; recorded in ``rating.json``); ``None`` (default): not known."""
        return None

    def token_stats(self) -> dict[str, int]:
        """Running counts since the backend was built: ``prompts``, ``prompt_tokens`` and
        ``cached_tokens`` (served from the prefix cache; meaningful only when
        :attr:`cached_known`). The default counts nothing (all zero)."""
        return {"prompts": 0, "prompt_tokens": 0, "cached_tokens": 0}

    @classmethod
    def serves(cls, kind: str) -> bool:
        """Whether this backend class serves request type ``kind`` (see
        :data:`REQUEST_TYPES`); known before it is built."""
        if kind not in REQUEST_TYPES:
            raise ValueError(f"unknown request type {kind!r} (known: {REQUEST_TYPES})")
        return not vars(getattr(cls, kind)).get("unserved", False)

    def unserved(self, kind: str, hint: str = "") -> Exception:
        """The one-line error for a request type this backend does not serve."""
        return UserError(f"the {self.name} backend does not serve {kind} requests"
                         + (f"; {hint}" if hint else ""))


class Embedder(_Held):
    """A model that turns texts into vectors. A backend subclasses this, calls
    ``super().__init__()`` first and implements :meth:`embed` (and :meth:`close` when it
    holds something)."""

    @abc.abstractmethod
    def embed(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors (pooling / normalisation per settings).

        Args:
            texts: the texts to embed.
            prompt: text put before every text (one of the model's prompts, resolved from its
                name by the caller); how it enters is the backend's to say. (default: ``None``)
        """


def embed_with_prompt(backend: Embedder, texts: Sequence[str],
                      prompt: str | None) -> np.ndarray:
    """``backend.embed(texts, prompt=prompt)``; without a prompt the plain ``embed(texts)``,
    the call an embedder written before prompts existed still takes."""
    return backend.embed(texts) if prompt is None else backend.embed(texts, prompt=prompt)


def check_vectors(vecs: object, n: int, what: str, start: int) -> np.ndarray:
    """The backend's answer for ``n`` texts from ``start`` as float32, or a DataError."""
    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[0] != n:
        raise DataError(f"embedder returned shape {vecs.shape} for {n} {what}")
    if not np.isfinite(vecs).all():
        raise DataError(f"embedder returned non-finite values for {what} "
                        f"{start}..{start + n - 1}")
    return vecs
