"""What every rating backend shares: model checks, tokenizer, label tokens, dtype, judgments.

A backend subclasses :class:`RaterCore` (a :class:`~llmhni_local.engine.api.Rater`), which
resolves and checks the model (and adapter) before any engine starts, resolves
``rater.dtype`` (``core/precision.py``), loads the tokenizer that renders every prompt
(``chat.py``), finds the label tokens after each answer cue (checked for the shipped rating
templates here, before the engine) and the model id; the backend then only turns token-id
prompts into ``(text, {token_id: logprob})`` pairs at the first generated position. The label
is then chosen by likelihood or by parsing (``rater.decide``; docs/DESIGN.md, "Reading the
answer at the label"). Log-likelihood requests are tokenised here too
(:meth:`RaterCore.loglikelihood`, each distinct text once), and the backend scores token ids
(:meth:`RaterCore.loglikelihood_ids`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from llmhni_local.core.errors import UserError
from llmhni_local.core.precision import log_choice, resolve_dtype
from llmhni_local.engine.api import JudgeRequest, Judgment, LoglikelihoodRequest, Rater
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
from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
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


#: Tokenised log-likelihood contexts a rater keeps (a user's contexts serve that user's pairs).
_CONTEXTS_KEPT = 4096


def prompts_of(requests: Sequence[JudgeRequest]) -> list[Messages]:
    """The chat messages of judge requests, in order."""
    return [list(r.messages) for r in requests]


def rater_id(base_id: str, decide: str) -> str:
    """The id judgments are stored under: parse-decided rows stay apart from likelihood ones."""
    return base_id if decide == "likelihood" else f"{base_id}+{decide}"


def default_rating_templates() -> list[Any]:
    """The shipped rating templates (``prompts/``), whose cues every rater checks at start."""
    return list(load_templates(tuple(VIEW_TEMPLATES.values())).values())


class RaterCore(Rater):
    """Model, adapter, dtype, tokenizer and label tokens of a rater; checked before the engine
    starts. ``counts`` (read through :meth:`token_stats`) counts prompt tokens and those
    served from the prefix cache."""

    # The chat template a judge needs is checked before the engine (rate.checked_rater_id) and
    # when a prompt is rendered; a likelihood reader needs none.
    needs: tuple[Need, ...] = READER_NEEDS

    def __init__(self, settings: RaterSettings) -> None:
        super().__init__()  # tracked: a stopped process closes it
        self.settings = settings
        self.spec: ModelSpec = resolve_checked(settings.model, self.needs)
        self.adapter: Path | None = check_adapter(settings.adapter) if settings.adapter else None
        self.dtype, self.dtype_reason = self.resolve_dtype()
        log_choice(self.dtype, self.dtype_reason)
        self.tokenizer: Any = load_tokenizer(self.spec.path)
        # Label tokens per answer cue; the shipped templates' cues are checked now, others
        # (a custom prompts folder) when first seen (rate.checked_rater_id checks them earlier).
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
        self._chat_form: str | None = (system_form(self.tokenizer)
                                       if getattr(self.tokenizer, "chat_template", None)
                                       else None)
        self.counts: dict[str, int] = {"prompts": 0, "prompt_tokens": 0, "cached_tokens": 0}
        self.cached_known = False  # whether the backend can see prefix-cache hits
        self._ctx_ids: dict[str, list[int]] = {}  # log-likelihood texts, tokenised once
        self._cont_ids: dict[str, list[int]] = {}

    @property
    def chat_form(self) -> str | None:
        return self._chat_form

    def token_stats(self) -> dict[str, int]:
        return dict(self.counts)

    def resolve_dtype(self) -> tuple[str, str]:
        """``(dtype, reason)`` for ``rater.dtype`` on this machine (``core/precision.py``)."""
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
        tokens' log-probabilities after the prompt (:meth:`loglikelihood_ids`, where the three
        continuations of one prompt share its tokens), then renormalised over the labels."""
        if self.settings.decide != "likelihood":
            raise UserError("a label splits into several tokens after the answer cue: only "
                            "rater.decide = 'likelihood' scores it")
        ids = self.prompt_ids(self.prompt_texts(prompts))
        seqs = self.sequences_for(prompts)
        requests = [(row, list(seq)) for row, m in zip(ids, seqs) for seq in m.values()]
        lls = iter(self.loglikelihood_ids(requests))
        out = []
        for m in seqs:
            probs, mass = probs_from_sequence_logprobs({lab: next(lls) for lab in m})
            out.append(Judgment(text="", label=choose_label(probs), probs=probs,
                                label_mass=mass, decided_by="likelihood"))
        self.counts["prompts"] += len(prompts)
        return out

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        """The requests tokenised (context with the tokenizer's special tokens, continuation
        without, each distinct text once) and scored by :meth:`loglikelihood_ids`."""
        return self.loglikelihood_ids([(self.context_ids(r.context),
                                        self.continuation_ids(r.continuation))
                                       for r in requests])

    def context_ids(self, text: str) -> list[int]:
        """Token ids of a log-likelihood context (with the tokenizer's special tokens)."""
        if text not in self._ctx_ids and len(self._ctx_ids) >= _CONTEXTS_KEPT:
            self._ctx_ids.clear()  # contexts come grouped by user: old ones are not asked again
        if text not in self._ctx_ids:
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
            if not ids:
                raise UserError("likelihood reader: a context tokenises to nothing")
            self._ctx_ids[text] = ids
        return self._ctx_ids[text]

    def continuation_ids(self, text: str) -> list[int]:
        """Token ids of a continuation (no special tokens: it goes on the context's text)."""
        if text not in self._cont_ids:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids:
                raise UserError(f"likelihood reader: the continuation {text!r} tokenises to "
                                "nothing")
            self._cont_ids[text] = ids
        return self._cont_ids[text]

    def loglikelihood_ids(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Summed log-probability of each continuation's tokens after its context (token
        ids); the likelihood reader and multi-token labels read through it."""
        raise self.unserved("loglikelihood", "use rater.backend = 'transformers' or 'vllm' "
                            "for the likelihood reader and for labels that split into "
                            "several tokens")

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """Render, check the length of, and read each prompt ``batch_size`` at a time through
        :meth:`read_batch`; the label each prompt wants is read off the answer position."""
        prompts = prompts_of(requests)
        texts = self.prompt_texts(prompts)
        ids = self.prompt_ids(texts)  # length check, the same for every backend
        maps = self.labels_for(prompts)
        wanted = self.wanted(maps)
        results: list[tuple[str, dict[int, float]]] = []
        size = self.settings.batch_size
        for start in range(0, len(texts), size):
            results += self.read_batch(texts[start:start + size], ids[start:start + size],
                                       wanted)
        return self.judgments(results, maps)

    def read_batch(self, texts: list[str], ids: list[list[int]], wanted: Sequence[int]
                   ) -> list[tuple[str, dict[int, float]]]:
        """One batch of rendered prompts (``ids``: their tokens): per prompt the generated
        text and the log-probability of each ``wanted`` token at the answer position; counts
        its tokens (:meth:`count_tokens`). A backend that reads labels this way implements
        it; one that reads them otherwise overrides :meth:`judge` instead."""
        raise NotImplementedError(f"{type(self).__name__} reads no batch of prompts")

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
        self.counts["prompts"] += prompts
        self.counts["prompt_tokens"] += prompt_tokens
        self.counts["cached_tokens"] += cached_tokens

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
