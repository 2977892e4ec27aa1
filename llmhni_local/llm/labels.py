"""Labels from answers: parsing the raw text, and label probabilities from log-probabilities.

**Parsing rules** (:func:`parse_label`), strict but sensible. An answer is a label when

1. after dropping leading whitespace, punctuation, quotes and markdown (``* _ ` " ' # > - :``
   and the like; not digits), and optionally one leading ``Answer:`` / ``Rating:`` /
   ``Relevance:`` / ``Label:`` / ``Relevance level:`` (then the same junk again),
2. its first word (a run of letters) is one of ``High``, ``Medium``, ``Low``, in any case,
3. and no *other* label word appears anywhere after it.

So ``High``, ``high.``, ``**Medium**``, ``"Low"``, ``- High``, ``High relevance``,
``Relevance: **Low**`` and ``HIGH\\n\\nBecause ...`` are labels; ``Not high``, ``High or
Medium``, ``Medium-high``, ``I think High``, ``Hi``, ``Highly``, ``Med``, ``1. High`` and the
empty string are not. A non-label is a counted failure upstream, never a default label.

**Probabilities** (:func:`label_token_ids`, :func:`probs_from_logprobs`): the probability of a
label is that of its *first token* at the answer position, read from the first generated
position's log-probabilities, renormalised over the labels; the mass before renormalising is
kept as ``label_mass``. The first tokens must differ between labels, or this read cannot tell
them apart (a model whose labels share a first token needs constrained choice instead).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from llmhni_local.errors import UserError
from llmhni_local.llm.base import LABELS

_JUNK = r"[\W_]*"  # anything but letters and digits (whitespace, punctuation, quotes, markdown)
_PREFIX = re.compile(rf"^{_JUNK}(?:answer|rating|relevance(?:\s+level)?|label)\s*[:=\-]", re.I)
_LEAD = re.compile(rf"^{_JUNK}")
_WORD = re.compile(r"[^\W\d_]+")
_LABEL_OF = {lab.lower(): lab for lab in LABELS}


def parse_label(text: str | None) -> str | None:
    """The label an answer gives, or ``None`` when it gives none (see the module's rules)."""
    if not text:
        return None
    rest = _PREFIX.sub("", text, count=1)
    rest = _LEAD.sub("", rest, count=1)
    first = _WORD.match(rest)
    if first is None:
        return None
    label = _LABEL_OF.get(first.group(0).lower())
    if label is None:
        return None
    others = {w.lower() for w in _WORD.findall(rest[first.end():])} & set(_LABEL_OF)
    if others - {label.lower()}:
        return None  # "High or Medium", "Low-Medium": more than one label named
    return label


def _answer_prefix(tokenizer: Any) -> str:
    """A chat-templated dummy prompt, so labels are tokenised as they follow the template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": "Rate."}],
                                             tokenize=False, add_generation_prompt=True)
    return ""


def label_token_ids(tokenizer: Any, labels: Sequence[str] = LABELS) -> dict[str, int]:
    """First token id of each label as the model would write it at the answer position.

    The label is tokenised right after a chat-templated prompt (with SmolLM2's template the
    answer starts without a space, so ``Medium`` is ``Med`` + ``ium`` and ``Med`` is scored).
    Raises :class:`UserError` when two labels share a first token.
    """
    prefix = _answer_prefix(tokenizer)

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    base = enc(prefix) if prefix else []
    out: dict[str, int] = {}
    for label in labels:
        full = enc(prefix + label)
        if full[: len(base)] == base and len(full) > len(base):
            out[label] = full[len(base)]
        else:  # the template's last token merged with the label: fall back to the bare label
            out[label] = enc(label)[0]
    if len(set(out.values())) != len(out):
        shown = ", ".join(f"{lab}->{tokenizer.convert_ids_to_tokens(t)!r}" for lab, t in out.items())
        raise UserError(f"model {getattr(tokenizer, 'name_or_path', '?')}: labels share a first "
                        f"token ({shown}); next-token scoring cannot tell them apart, "
                        "constrained choice is needed")
    return out


def probs_from_logprobs(logprobs: Mapping[int, float],
                        label_ids: Mapping[str, int]) -> tuple[dict[str, float] | None, float | None]:
    """Label probabilities renormalised over the labels, and the mass they held.

    Args:
        logprobs: log-probability of token ids at the first generated position (full-vocabulary
            log-softmax, as vLLM's raw logprobs and transformers' ``log_softmax`` give).
        label_ids: label -> first token id (:func:`label_token_ids`).

    Returns ``(None, None)`` when a label's token is missing from ``logprobs`` (e.g. a server
    that only returned its top-k): an unread probability is not guessed.
    """
    values: dict[str, float] = {}
    for label, tid in label_ids.items():
        lp = logprobs.get(tid)
        if lp is None or math.isnan(lp):
            return None, None
        values[label] = float(lp)
    top = max(values.values())
    if top == -math.inf:
        return None, 0.0
    exps = {lab: math.exp(lp - top) for lab, lp in values.items()}  # log-sum-exp, no underflow
    total = sum(exps.values())
    mass = math.exp(top) * total
    return {lab: e / total for lab, e in exps.items()}, min(mass, 1.0)
