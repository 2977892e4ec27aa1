"""What every rating backend shares: model checks, tokenizer, label tokens, dtype, judgments.

A backend subclasses :class:`RaterCore`, which resolves and checks the model (and adapter)
before any engine starts, resolves ``rater.dtype`` (``core/precision.py``), loads the tokenizer that
renders every prompt (``chat.py``), finds the label tokens after each answer cue (checked for
the shipped rating templates here, before the engine) and the model id; the backend then only
turns token-id prompts into ``(text, {token_id: logprob})`` pairs at the first generated
position. The label is then chosen by likelihood or by parsing (``rater.decide``;
docs/DESIGN.md, "Reading the answer at the label").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from llmhni_local.core.errors import UserError
from llmhni_local.engine.api import Judgment
from llmhni_local.engine.chat import (
    Messages,
    answer_cue,
    encode_prompts,
    load_tokenizer,
    render_prompts,
    system_form,
)
from llmhni_local.engine.labels import (
    choose_label,
    label_sequences,
    label_token_ids,
    parse_label,
    probs_from_logprobs,
    probs_from_sequence_logprobs,
    template_label_sequences,
)
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.weights.adapters import check_adapter
from llmhni_local.weights.registry import READER_NEEDS, ModelSpec, Need, model_id, resolve_checked


def judgment(text: str, logprobs: Mapping[int, float], label_ids: Mapping[str, int],
             decide: str = "likelihood") -> Judgment:
    """A :class:`Judgment` from the raw answer and the answer position's label logprobs: the
    most likely label (``likelihood``) or the label the text names (``parse``)."""
    probs, mass = probs_from_logprobs(logprobs, label_ids)
    if decide == "likelihood":
        return Judgment(text=text, label=choose_label(probs), probs=probs, label_mass=mass,
                        decided_by="likelihood")
    return Judgment(text=text, label=parse_label(text), probs=probs, label_mass=mass,
                    decided_by="parse")


def rater_id(base_id: str, decide: str) -> str:
    """The id judgments are stored under: parse-decided rows stay apart from likelihood ones."""
    return base_id if decide == "likelihood" else f"{base_id}+{decide}"


def default_rating_templates() -> list[Any]:
    """The shipped rating templates (``prompts/``), whose cues every rater checks at start."""
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates

    return list(load_templates(tuple(VIEW_TEMPLATES.values())).values())


class Closing:
    """``with backend:`` calls ``close()`` at the end (engines and connections)."""

    def close(self) -> None:  # backends override
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RaterCore(Closing):
    """Model, adapter, dtype, tokenizer and label tokens of a rater; checked before the engine
    starts. ``token_stats`` counts prompt tokens and those served from the prefix cache."""

    # The chat template a judge needs is checked before the engine (rate.rater_model_id) and
    # when a prompt is rendered; a likelihood reader needs none.
    needs: tuple[Need, ...] = READER_NEEDS

    def __init__(self, settings: RaterSettings) -> None:
        from llmhni_local.core.precision import log_choice

        self.settings = settings
        self.spec: ModelSpec = resolve_checked(settings.model, self.needs)
        self.adapter: Path | None = check_adapter(settings.adapter) if settings.adapter else None
        self.dtype, self.dtype_reason = self.resolve_dtype()
        log_choice(self.dtype, self.dtype_reason)
        self.tokenizer: Any = load_tokenizer(self.spec.path)
        # Label tokens per answer cue; the shipped templates' cues are checked now, others
        # (a custom prompts folder) when first seen (rate.rater_model_id checks them earlier).
        # A label split into several tokens after a cue is scored as a sequence
        # (rate_sequences); single-token labels are read off one position.
        # A tokenizer without a chat template (a base model) cannot judge but can still be a
        # likelihood reader: its label tokens are then never read.
        self._cue_seqs: dict[str, dict[str, tuple[int, ...]]] = (
            template_label_sequences(self.tokenizer, default_rating_templates())
            if getattr(self.tokenizer, "chat_template", None) else {})
        self._cue_ids: dict[str, dict[str, int]] = {
            cue: {lab: s[0] for lab, s in seqs.items()}
            for cue, seqs in self._cue_seqs.items() if all(len(s) == 1 for s in seqs.values())}
        self.label_ids: dict[str, int] = next(iter(self._cue_ids.values()), {})
        if len(self._cue_ids) < len(self._cue_seqs) and settings.decide != "likelihood":
            raise UserError(f"model {settings.model}: a label splits into several tokens after "
                            "the answer cue, which only rater.decide = 'likelihood' scores (as a "
                            "sequence); rater.decide = 'parse' reads one generated token")
        self.model_id: str = rater_id(model_id(self.spec, self.adapter), settings.decide)
        # how the chat template took the system text (recorded in rating.json)
        self.chat_form: str | None = (system_form(self.tokenizer)
                                      if getattr(self.tokenizer, "chat_template", None) else None)
        self.token_stats: dict[str, int] = {"prompts": 0, "prompt_tokens": 0,
                                            "cached_tokens": 0}
        self.cached_known = False  # whether the backend can see prefix-cache hits

    def resolve_dtype(self) -> tuple[str, str]:
        """``(dtype, reason)`` for ``rater.dtype`` on this machine (``core/precision.py``)."""
        from llmhni_local.core.precision import resolve_dtype

        return resolve_dtype(self.settings.dtype)

    @property
    def dtype_choice(self) -> dict[str, str]:
        return {"requested": self.settings.dtype, "dtype": self.dtype, "reason": self.dtype_reason}

    def sequences_for(self, prompts: Sequence[Messages]) -> list[dict[str, tuple[int, ...]]]:
        """Per prompt, label -> token ids after its answer cue (its last assistant message)."""
        out = []
        for messages in prompts:
            cue = answer_cue(messages) or ""
            if cue not in self._cue_seqs:
                self._cue_seqs[cue] = (
                    label_sequences(self.tokenizer, cue=cue) if cue else
                    {lab: (t,) for lab, t in label_token_ids(self.tokenizer).items()})
            out.append(self._cue_seqs[cue])
        return out

    def needs_sequences(self, prompts: Sequence[Messages]) -> bool:
        """Whether some prompt's labels split into several tokens (:meth:`rate_sequences`)."""
        return any(len(s) > 1 for m in self.sequences_for(prompts) for s in m.values())

    def labels_for(self, prompts: Sequence[Messages]) -> list[dict[str, int]]:
        """Per prompt, label -> token id after its answer cue (single-token labels)."""
        return [{lab: s[0] for lab, s in m.items()} for m in self.sequences_for(prompts)]

    def rate_sequences(self, prompts: Sequence[Messages]) -> list[Judgment]:
        """Judgments whose labels are token sequences: each label scored by the sum of its
        tokens' log-probabilities after the prompt (:meth:`loglikelihood`, where the three
        continuations of one prompt share its tokens), then renormalised over the labels."""
        if self.settings.decide != "likelihood":
            raise UserError("a label splits into several tokens after the answer cue: only "
                            "rater.decide = 'likelihood' scores it")
        ids = self.prompt_ids(self.prompt_texts(prompts))
        seqs = self.sequences_for(prompts)
        requests = [(row, list(seq)) for row, m in zip(ids, seqs) for seq in m.values()]
        lls = iter(self.loglikelihood(requests))
        out = []
        for m in seqs:
            probs, mass = probs_from_sequence_logprobs({lab: next(lls) for lab in m})
            out.append(Judgment(text="", label=choose_label(probs), probs=probs,
                                label_mass=mass, decided_by="likelihood"))
        self.token_stats["prompts"] += len(prompts)
        return out

    def loglikelihood(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Summed log-probability of each continuation's tokens after its context (token
        ids); the likelihood reader and multi-token labels read through it."""
        raise UserError(f"the {type(self).__name__} backend gives no prompt log-probabilities; "
                        "use rater.backend = 'transformers' or 'vllm' for the likelihood reader "
                        "and for labels that split into several tokens")

    @staticmethod
    def wanted(label_maps: Sequence[Mapping[str, int]]) -> list[int]:
        """Every label token id the prompts need, in a fixed order (asked of the engine)."""
        seen: dict[int, None] = {}
        for m in label_maps:
            seen.update(dict.fromkeys(m.values()))
        return list(seen)

    def judgments(self, results: Sequence[tuple[str, Mapping[int, float]]],
                  label_maps: Sequence[Mapping[str, int]]) -> list[Judgment]:
        return [judgment(text, lps, ids, self.settings.decide)
                for (text, lps), ids in zip(results, label_maps)]

    def count_tokens(self, prompt_tokens: int, cached_tokens: int = 0, prompts: int = 0) -> None:
        self.token_stats["prompts"] += prompts
        self.token_stats["prompt_tokens"] += prompt_tokens
        self.token_stats["cached_tokens"] += cached_tokens

    def prompt_texts(self, prompts: Sequence[Messages]) -> list[str]:
        return render_prompts(self.tokenizer, prompts)

    def prompt_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of rendered prompts; a prompt too long for ``max_model_len`` is an error."""
        ids = encode_prompts(self.tokenizer, texts)
        limit = self.settings.max_model_len - self.settings.max_tokens
        for i, row in enumerate(ids):
            if len(row) > limit:
                raise UserError(f"prompt {i} has {len(row)} tokens, more than rater.max_model_len "
                                f"({self.settings.max_model_len}) minus rater.max_tokens "
                                f"({self.settings.max_tokens}) allows; raise max_model_len or "
                                "shorten the profiles")
        return ids
