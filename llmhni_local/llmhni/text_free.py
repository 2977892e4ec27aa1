"""LLMHNI on data without item text: which of its parts turn off, and the sentence that says so
(docs/DESIGN.md, "Data without text").

Text enters LLMHNI twice: the similarity test of the semantic negatives and the alignment of
the profile embeddings (docs/METHOD.md, stages 3 and 8). Its denoising half, G' with L_de and
L_hal, reads only the verdicts, and imported or simulated verdicts need no text. So on data
whose items have neither text nor metadata the two text switches are off and the rest runs.

With the similarity test off, the negative is a uniform draw (the pool's first candidate):
the paper's own ablation without semantic negatives, so the row stays comparable to a
published one and adds no technique of its own. The pool's highest-scoring candidate (DNS,
the ``combined`` rule at ``beta = 0``) would put a baseline's gain (the ``dns`` row) under
LLMHNI's name, with none of the false negatives caught that the similarity test exists for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from llmhni_local.llmhni.settings import LLMHNISettings

#: The ``[llmhni]`` switches that read the profile embeddings; off without item text.
TEXT_SWITCHES: tuple[str, ...] = ("semantic_negatives", "alignment")

#: ``[llmhni]`` fields read only through those switches: a row that changes nothing else
#: trains what ``llmhni`` trains on data without text.
TEXT_FIELDS: frozenset[str] = frozenset(
    {*TEXT_SWITCHES, "pool_size", "similarity_rule", "threshold_quantile", "beta", "align"})


def has_item_text(data: Any) -> bool:
    """Whether the items carry text or metadata to write profiles from. Users without text are
    no obstacle: their profiles are written from the items they liked."""
    return data.item_text is not None or data.item_meta is not None


def without_text(settings: LLMHNISettings) -> LLMHNISettings:
    """``settings`` with :data:`TEXT_SWITCHES` off."""
    return dataclasses.replace(settings, **{s: False for s in TEXT_SWITCHES})


def without_text_notes(data: Any) -> list[str]:
    """What LLMHNI runs without on ``data``, as sentences without their final stop, for the
    run's first line and its report; none for data with item text."""
    if has_item_text(data):
        return []
    notes = [f"Without text: {data.name} has no item text or metadata, so LLMHNI runs without "
             "semantic negatives (uniform negatives instead) and without alignment, and no "
             "profiles, embeddings or LLM ratings are made"]
    if data.user_text is not None:
        notes.append("Its user texts are not used: a rating prompt and a similarity need the "
                     "item's text too")
    return notes
