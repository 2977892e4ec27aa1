"""Chat prompts to prompt text and token ids: the one place every backend goes through.

vLLM in-process, the OpenAI-compatible server and transformers must see the very same tokens,
or their label probabilities stop being comparable (and prefix caching stops matching). So the
chat template is applied here, once, with ``add_generation_prompt=True``; a prompt whose last
message is the assistant's (a rating template's answer cue, ``Relevance:``) is rendered as the
*open* start of the assistant turn instead (``continue_final_message=True``), so the text ends
``...assistant\nRelevance:`` and the next token is the label (docs/DESIGN.md, "Reading the
answer at the label"). The messages are never
reordered (the prompt templates put the part shared by many prompts first, and the KV blocks of
that prefix are reused). The text is tokenised with ``add_special_tokens=False``: a chat
template writes the special tokens it wants (BOS included) itself.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from llmhni_local.core.errors import UserError
from llmhni_local.core.offline import enforce_offline

Messages = list[dict[str, str]]


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The model folder's tokenizer (offline), with a pad token for left-padded batches."""
    enforce_offline()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        # Padding positions are masked out; any id will do, EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _check_messages(messages: Any, index: int) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"prompt {index}: expected a non-empty list of chat messages")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise ValueError(f"prompt {index}: every message needs string 'role' and 'content'")


def system_form(tokenizer: Any) -> str:
    """How this tokenizer's chat template takes a system message: ``"system"`` (a system
    turn) or ``"folded"`` (the template refuses one, as Gemma's raises, so the system text
    opens the first user turn instead). Found by trying the template once."""
    cached = getattr(tokenizer, "_llmhni_system_form", None)
    if cached is not None:
        return cached
    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        form = "system"
    except Exception:  # noqa: BLE001 - jinja's TemplateError, or whatever a template raises
        form = "folded"
    try:
        tokenizer._llmhni_system_form = form
    except AttributeError:  # a tokenizer that takes no attributes: try again next time
        pass
    return form


def fold_system(messages: Messages) -> Messages:
    """The messages with a leading system message folded into the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return list(messages)
    system, rest = messages[0]["content"], list(messages[1:])
    if rest and rest[0]["role"] == "user":
        rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The chat-templated prompt text, ending where the assistant's answer starts: after the
    generation prompt, or after a trailing assistant message (the answer cue), left open. A
    template without a system role gets the system text in the first user turn
    (:func:`system_form`)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {getattr(tokenizer, 'name_or_path', '?')}: the tokenizer has no "
                        "chat template (a base model?); a rater needs an instruction model")
    _check_messages(messages, 0)
    if messages[0]["role"] == "system" and system_form(tokenizer) == "folded":
        messages = fold_system(messages)
    if messages[-1]["role"] == "assistant":
        # The template would close the turn (<|im_end|>); continue_final_message cuts the text
        # right after the cue, so the model continues the same assistant turn.
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=False,
                                             continue_final_message=True)
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=True)


def answer_cue(messages: Messages) -> str | None:
    """The cue a prompt's assistant turn opens with (its trailing assistant message), or None."""
    return messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else None


def render_prompts(tokenizer: Any, prompts: Sequence[Messages]) -> list[str]:
    """:func:`render_prompt` over a batch, in order."""
    for i, messages in enumerate(prompts):
        _check_messages(messages, i)
    return [render_prompt(tokenizer, m) for m in prompts]


def encode_prompts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of rendered prompts, without adding special tokens (the template did)."""
    return [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def batch_tensors(rows: Sequence[Sequence[int]], pad_id: int):
    """Left-padded ``input_ids``, ``attention_mask`` and ``position_ids`` (positions count
    from each prompt's first real token, as in generation, so padding changes nothing)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[k, width - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos
