"""What every rating backend shares: model checks, tokenizer, label tokens, judgments.

A backend subclasses :class:`RaterCore`, which resolves and checks the model (and adapter)
before any engine starts, loads the tokenizer that renders every prompt (``chat.py``), finds the
label tokens and the model id; the backend then only turns token-id prompts into
``(text, {token_id: logprob})`` pairs at the first generated position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from llmhni_local.errors import UserError
from llmhni_local.llm.base import Judgment
from llmhni_local.llm.chat import Messages, encode_prompts, load_tokenizer, render_prompts
from llmhni_local.llm.labels import label_token_ids, parse_label, probs_from_logprobs
from llmhni_local.llm.registry import (RATER_NEEDS, ModelSpec, Need, check_adapter, model_id,
                                       resolve_checked)
from llmhni_local.llm.settings import RaterSettings


def judgment(text: str, logprobs: Mapping[int, float], label_ids: Mapping[str, int]) -> Judgment:
    """A :class:`Judgment` from the raw answer and the first position's label logprobs."""
    probs, mass = probs_from_logprobs(logprobs, label_ids)
    return Judgment(text=text, label=parse_label(text), probs=probs, label_mass=mass)


class Closing:
    """``with backend:`` calls ``close()`` at the end (engines and connections)."""

    def close(self) -> None:  # backends override
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RaterCore(Closing):
    """Model, adapter, tokenizer and label tokens of a rater; checked before the engine starts."""

    needs: tuple[Need, ...] = RATER_NEEDS

    def __init__(self, settings: RaterSettings) -> None:
        self.settings = settings
        self.spec: ModelSpec = resolve_checked(settings.model, self.needs)
        self.adapter: Path | None = check_adapter(settings.adapter) if settings.adapter else None
        self.tokenizer: Any = load_tokenizer(self.spec.path)
        self.label_ids: dict[str, int] = label_token_ids(self.tokenizer)
        self.model_id: str = model_id(self.spec, self.adapter)

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
