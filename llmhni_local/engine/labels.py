"""Labels from answers: by likelihood at the label position, or by parsing the raw text.

**Likelihood** (the default, ``rater.decide = "likelihood"``; :func:`choose_label`): the rating
templates open the assistant turn with an answer cue (``Relevance:``), so the next token is the
label. The judgment is the label whose token has the highest log-probability there, as
multiple-choice evaluation harnesses score options; no free text is needed, and the answer
cannot fail to parse. A label the tokenizer splits into several tokens after the cue is scored
by the sum of its tokens' log-probabilities (:func:`label_sequences`,
:func:`probs_from_sequence_logprobs`); labels that tokenise to the same sequence are an error
before any engine starts. A judgment whose label mass (the probability the
model put on the label tokens at all) is below ``rate.min_label_mass`` is a counted failure.
See docs/DESIGN.md, "Reading the answer at the label".

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

Parsing (``rater.decide = "parse"``) is the older path, kept for free-text inspection.

**Probabilities** (:func:`label_token_ids`, :func:`probs_from_logprobs`): the probability of a
label is that of its token at the answer position (the first generated position),
renormalised over the labels; the mass before renormalising is kept as ``label_mass``. Without
a cue (a template with no ``assistant`` part) the label's *first* token after the generation
prompt is read, as before; the first tokens must still differ between labels.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

from llmhni_local.core.errors import UserError
from llmhni_local.engine.api import LABELS
from llmhni_local.engine.chat import render_prompt

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


def _answer_prefix(tokenizer: Any, cue: str | None = None) -> str:
    """A chat-templated dummy prompt ending where the answer starts (after ``cue`` if given),
    so labels are tokenised as they follow the real template."""
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": "Rate."}]
        if cue:
            msgs.append({"role": "assistant", "content": cue})
        return render_prompt(tokenizer, msgs)
    return cue or ""


def _pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(p) for p in tokenizer.convert_ids_to_tokens(list(ids))]


def label_token_ids(tokenizer: Any, labels: Sequence[str] = LABELS, *, cue: str | None = None,
                    where: str | None = None) -> dict[str, int]:
    """Token id of each label as the model would write it at the answer position.

    With ``cue`` (a rating template's ``assistant`` part): each label is tokenised as it
    follows the cue in a chat-templated prompt, after one space (`` High``), and must be a
    single token there; ``where`` (the template file) is named in the error otherwise.
    Without it (a template with no cue), the label's first token right after the generation
    prompt (with SmolLM2's template ``Medium`` is then ``Med`` + ``ium`` and ``Med`` is read).
    Raises :class:`UserError` when a label is not one token after the cue, or two labels
    share their token.
    """
    if cue is not None:
        return _cue_label_ids(tokenizer, labels, cue, where)
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
        shown = ", ".join(f"{lab}->{tokenizer.convert_ids_to_tokens(t)!r}"
                          for lab, t in out.items())
        raise UserError(f"model {getattr(tokenizer, 'name_or_path', '?')}: labels share a first "
                        f"token ({shown}); next-token scoring cannot tell them apart, "
                        "constrained choice is needed")
    return out


def label_sequences(tokenizer: Any, labels: Sequence[str] = LABELS, *, cue: str,
                    where: str | None = None) -> dict[str, tuple[int, ...]]:
    """Token ids of each label as it follows the answer cue ``cue`` in a chat-templated
    prompt, after one space: one token or several (a tokenizer that splits ``Medium``).

    Raises :class:`UserError` (naming ``where``, the template file) when the cue and a label
    merge into tokens (the label cannot be read after the cue) or two labels tokenise to the
    same sequence."""
    prefix = _answer_prefix(tokenizer, cue)
    sep = "" if not cue or cue[-1].isspace() else " "
    name = getattr(tokenizer, "name_or_path", "?")
    at = where or f"answer cue {cue!r}"

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    base = enc(prefix)
    out: dict[str, tuple[int, ...]] = {}
    for label in labels:
        full = enc(prefix + sep + label)
        if full[:len(base)] != base or len(full) == len(base):
            raise UserError(f"{at}: with model {name} the cue {cue!r} and the label {label!r} "
                            f"merge into tokens {_pieces(tokenizer, full[-4:])}; the label "
                            "cannot be read after the cue (end the cue differently)")
        out[label] = tuple(full[len(base):])
    if len(set(out.values())) != len(out):
        shown = ", ".join(f"{lab}->{_pieces(tokenizer, list(t))}" for lab, t in out.items())
        raise UserError(f"{at}: with model {name} labels tokenise to the same sequence after "
                        f"the cue {cue!r} ({shown}); no reading can tell them apart")
    return out


def _cue_label_ids(tokenizer: Any, labels: Sequence[str], cue: str,
                   where: str | None) -> dict[str, int]:
    """Single-token labels after the cue (what fine-tuning and the probe read); a label
    that splits is an error here, though the rater scores it as a sequence."""
    seqs = label_sequences(tokenizer, labels, cue=cue, where=where)
    name = getattr(tokenizer, "name_or_path", "?")
    at = where or f"answer cue {cue!r}"
    for label, rest in seqs.items():
        if len(rest) != 1:
            raise UserError(f"{at}: with model {name} the label {label!r} after the cue {cue!r} "
                            f"is the tokens {_pieces(tokenizer, list(rest))}, not a single token; "
                            "LoRA fine-tuning and the probe read one token (choose a cue or "
                            "labels after which every label is one token)")
    out = {label: rest[0] for label, rest in seqs.items()}
    if len(set(out.values())) != len(out):
        shown = ", ".join(f"{lab}->{_pieces(tokenizer, [t])[0]!r}" for lab, t in out.items())
        raise UserError(f"{at}: with model {name} labels share a token after the cue {cue!r} "
                        f"({shown}); next-token scoring cannot tell them apart")
    return out


def template_label_sequences(tokenizer: Any, templates: Iterable[Any],
                             labels: Sequence[str] = LABELS
                             ) -> dict[str, dict[str, tuple[int, ...]]]:
    """Label token sequences per answer cue of the rating templates (checked as
    :func:`label_sequences` does); a template without a cue reads single first tokens."""
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for tpl in templates:
        cue = getattr(tpl, "cue", None)
        key = cue or ""
        if key in out:
            continue
        if cue:
            out[key] = label_sequences(tokenizer, labels, cue=cue, where=str(tpl.path))
        else:
            out[key] = {lab: (t,) for lab, t in label_token_ids(tokenizer, labels).items()}
    return out


def probs_from_sequence_logprobs(logprobs: Mapping[str, float]
                                 ) -> tuple[dict[str, float] | None, float | None]:
    """Label probabilities from each label's summed token log-probability after the cue,
    renormalised over the labels, and the mass the labels held (as
    :func:`probs_from_logprobs` gives for single tokens, so stored figures compare across
    tokenizers). ``(None, None)`` when a value is missing or not a number."""
    values = {lab: float(lp) for lab, lp in logprobs.items()}
    if not values or any(math.isnan(v) for v in values.values()):
        return None, None
    top = max(values.values())
    if top == -math.inf:
        return None, 0.0
    exps = {lab: math.exp(lp - top) for lab, lp in values.items()}
    total = sum(exps.values())
    return {lab: e / total for lab, e in exps.items()}, min(math.exp(top) * total, 1.0)


def template_label_ids(tokenizer: Any, templates: Iterable[Any],
                       labels: Sequence[str] = LABELS) -> dict[str, dict[str, int]]:
    """Label token ids per answer cue of the given rating templates (``""`` for no cue),
    checked as :func:`label_token_ids` does; raises naming the template file."""
    out: dict[str, dict[str, int]] = {}
    for tpl in templates:
        cue = getattr(tpl, "cue", None)
        key = cue or ""
        if key not in out:
            out[key] = label_token_ids(tokenizer, labels, cue=cue, where=str(tpl.path))
    return out


def choose_label(probs: Mapping[str, float] | None) -> str | None:
    """The most likely label (ties go to the earlier label of ``LABELS``); None without probs."""
    if not probs:
        return None
    order = {lab: k for k, lab in enumerate(LABELS)}
    return max(probs, key=lambda lab: (probs[lab], -order.get(lab, len(order))))


def probs_from_logprobs(logprobs: Mapping[int, float], label_ids: Mapping[str, int]
                        ) -> tuple[dict[str, float] | None, float | None]:
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
