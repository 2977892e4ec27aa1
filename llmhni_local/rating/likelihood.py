"""The likelihood reader: a view's relevance as a score, not an answer (``rate.mode =
"likelihood"``; docs/DESIGN.md, "The likelihood reader").

For a pair (u, i) and a view, the score is the pointwise mutual information

    score = log p(name_i | context_view(u)) - log p(name_i | neutral)

where ``name_i`` is the item's one-line name (``Profiles.item_names``), the user-centric
context holds u's profile and the item-centric one the items u liked in training (the
candidate left out), and ``neutral`` is one fixed text (``prompts/likelihood.toml``).
Dividing by the neutral likelihood takes out what any context would give the name (its
popularity, its length); nothing asks the model to follow an instruction. The idea is Sileo
et al.'s zero-shot recommendation by language-model likelihood (GPT-2 on MovieLens, 2022).

A request is ``(context_ids, continuation_ids)``; a backend's ``loglikelihood`` returns the
summed log-probability of the continuation's tokens after the context, as multiple-choice
evaluation scores a choice. Context and continuation are tokenised apart (the context with
the tokenizer's own special tokens, the continuation, which starts a new word, without), so
every pair of a user shares the context's tokens exactly and a backend can compute them once.
The neutral term is the same for every user: one request per item, not per pair.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

from llmhni_local.core.errors import UserError
from llmhni_local.engine.prompts import Template

#: The reader's template (``prompts/likelihood.toml``).
LIKELIHOOD_TEMPLATE = "likelihood"

Request = tuple[list[int], list[int]]


class LoglikelihoodBackend(Protocol):
    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        """Summed log-probability of each continuation's tokens after its context."""


def view_context(view: str, user: int, item: int, profiles, template: Template,
                 max_liked: int) -> str:
    """The context text of one view of one pair."""
    from llmhni_local.rating.plan import liked_text

    if view == "user":
        return template.render("user_context", {"user_profile": profiles.users[user]})
    if view == "item":
        return template.render("item_context",
                               {"liked_items": liked_text(profiles, user, item, max_liked)})
    raise ValueError(f"unknown view {view!r}")


class Encoder:
    """Token ids of contexts and continuations, cached (a user's context is shared by all of
    that user's candidates; the neutral context by every request)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._ctx: dict[str, list[int]] = {}
        self._cont: dict[str, list[int]] = {}

    def context(self, text: str) -> list[int]:
        if text not in self._ctx:
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
            if not ids:
                raise UserError("likelihood reader: a context tokenises to nothing")
            self._ctx[text] = ids
        return self._ctx[text]

    def continuation(self, text: str) -> list[int]:
        if text not in self._cont:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids:
                raise UserError(f"likelihood reader: the continuation {text!r} tokenises to "
                                "nothing")
            self._cont[text] = ids
        return self._cont[text]


def pmi_scores(backend: LoglikelihoodBackend, encoder: Encoder, work: Sequence[tuple],
               profiles, template: Template, max_liked: int,
               neutral: dict[int, float] | None = None) -> list[float | None]:
    """Scores of ``work`` rows ``(user, item, view, kind)`` (``rate_plan.plan``), in order; ``None`` where the
    backend gave a non-finite log-probability (a counted failure upstream, never a score).

    The neutral term of an item is the same for every user: it is computed once and kept in
    ``neutral`` (item -> log-likelihood; pass the same dict to every batch of a run). Rows
    arrive grouped by user (``rate_plan.plan``), so each context's tokens are adjacent for
    the backend."""
    neutral = {} if neutral is None else neutral
    neutral_ctx = encoder.context(template.render("neutral_context", {}))
    conts = [encoder.continuation(template.render("continuation",
                                                  {"item_name": profiles.item_names[int(i)]}))
             for _, i, _, _ in work]
    items = sorted({int(i) for _, i, _, _ in work} - set(neutral))
    cont_of = {int(w[1]): c for w, c in zip(work, conts)}
    requests: list[Request] = [(encoder.context(view_context(v, int(u), int(i), profiles,
                                                             template, max_liked)), c)
                               for (u, i, v, _), c in zip(work, conts)]
    requests += [(neutral_ctx, cont_of[i]) for i in items]
    lls = backend.loglikelihood(requests)
    neutral.update(zip(items, lls[len(work):]))
    out: list[float | None] = []
    for (_, i, _, _), ll in zip(work, lls[:len(work)]):
        s = ll - neutral[int(i)]
        out.append(float(s) if math.isfinite(s) else None)
    return out
