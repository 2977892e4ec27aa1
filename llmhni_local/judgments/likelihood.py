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

Each term is a :class:`~llmhni_local.engine.api.LoglikelihoodRequest` (context text,
continuation text, the view and pair it belongs to); a backend's ``loglikelihood`` returns the
summed log-probability of the continuation's tokens after the context, as multiple-choice
evaluation scores a choice. The backend tokenises context and continuation apart (the context
with the tokenizer's own special tokens, the continuation, which starts a new word, without),
so every pair of a user shares the context's tokens exactly and a backend can compute them
once. The neutral term is the same for every user: one request per item, not per pair.
"""

from __future__ import annotations

import math
from typing import Sequence

from llmhni_local.engine.api import LoglikelihoodRequest, Rater
from llmhni_local.engine.prompts import Template
from llmhni_local.judgments.plan import liked_text

#: The reader's template (``prompts/likelihood.toml``).
LIKELIHOOD_TEMPLATE = "likelihood"


def view_context(view: str, user: int, item: int, profiles, template: Template,
                 max_liked: int) -> str:
    """The context text of one view of one pair."""
    if view == "user":
        return template.render("user_context", {"user_profile": profiles.users[user]})
    if view == "item":
        return template.render("item_context",
                               {"liked_items": liked_text(profiles, user, item, max_liked)})
    raise ValueError(f"unknown view {view!r}")


def pmi_scores(backend: Rater, work: Sequence, profiles, template: Template, max_liked: int,
               neutral: dict[int, float] | None = None) -> list[float | None]:
    """Scores of ``work`` (:class:`~llmhni_local.judgments.plan.WorkItem`, from
    ``rating.plan.plan``), in order; ``None`` where the backend gave a non-finite
    log-probability (a counted failure upstream, never a score).

    The neutral term of an item is the same for every user: it is computed once and kept in
    ``neutral`` (item -> log-likelihood; pass the same dict to every batch of a run). Items
    arrive grouped by user (``plan``), so each context's tokens are adjacent for the
    backend."""
    neutral = {} if neutral is None else neutral
    neutral_ctx = template.render("neutral_context", {})

    def name(item: int) -> str:
        return template.render("continuation", {"item_name": profiles.item_names[int(item)]})

    items = sorted({int(w.item) for w in work} - set(neutral))
    requests = [LoglikelihoodRequest(
        context=view_context(w.view, int(w.user), int(w.item), profiles, template, max_liked),
        continuation=name(w.item), view=w.view, user=int(w.user), item=int(w.item))
        for w in work]
    requests += [LoglikelihoodRequest(context=neutral_ctx, continuation=name(i), item=i)
                 for i in items]
    lls = backend.loglikelihood(requests)
    neutral.update(zip(items, lls[len(work):]))
    out: list[float | None] = []
    for w, ll in zip(work, lls[:len(work)]):
        s = ll - neutral[int(w.item)]
        out.append(float(s) if math.isfinite(s) else None)
    return out
