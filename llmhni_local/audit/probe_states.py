"""Hidden states at the answer position: what a probe head reads, at fitting and at rating.

The prompt text always comes from :func:`llmhni_local.llm.chat.render_prompts` on the rating
stage's view messages, so the probe sees the very prompt the rater sees; the answer position is
the prompt's last token (the rendered prompt ends with the open assistant turn and its cue, so
the next token is the label). The base model runs once per prompt through transformers with
``output_hidden_states``: prompts are length-sorted into batches, left-padded (so every
prompt's last token is the batch's last column, with positions counted from its first real
token), under ``inference_mode``, and only the last position's logits are computed
(``logits_to_keep=1``: SmolLM2's vocabulary projection over every position would cost more
than the states themselves).

Layer numbering is transformers': index ``k`` is the state after ``k`` decoder layers (0: the
embeddings) and index ``n_layers`` is the final norm's output, the state the language-model
head reads.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def state_dtype() -> str:
    """The dtype to run the base model in for ``probe.dtype = "auto"``: the rater's own
    hardware rule (``llm/device.py``: bfloat16 on a CPU with AVX-512 BF16 or AMX, else
    float32). The states are read on the CPU; a probe is served in the dtype it was fitted in."""
    from llmhni_local.llm.device import resolve_dtype

    return resolve_dtype("auto", cuda=False, setting="probe.dtype")[0]


def candidate_layers(n_layers: int, step: int) -> list[int]:
    """Hidden-state indices the probe chooses among: every ``step``-th layer, the middle one
    and the final norm's output.

    >>> candidate_layers(30, 4)
    [4, 8, 12, 15, 16, 20, 24, 28, 30]
    >>> candidate_layers(2, 4)
    [1, 2]
    """
    if n_layers < 1:
        raise ValueError(f"a model with {n_layers} layers has no hidden states to probe")
    chosen = set(range(step, n_layers, step)) if step > 0 else set()
    return sorted(chosen | {max(1, n_layers // 2), n_layers})


def load_base(path: str, dtype: str) -> Any:
    """The base causal LM in ``dtype`` (offline), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmhni_local.llm.offline import enforce_offline

    enforce_offline()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype),
                                                 local_files_only=True)
    return model.eval()


def answer_states(model: Any, rows: Sequence[Sequence[int]], layers: Sequence[int],
                  pad_id: int, batch_size: int = 16) -> np.ndarray:
    """``(len(rows), len(layers), hidden)`` float32 states at each prompt's last token.

    Args:
        model: a transformers causal LM (eval mode).
        rows: token ids of rendered prompts (:func:`llmhni_local.llm.chat.encode_prompts`).
        layers: hidden-state indices to keep (see the module docstring).
        pad_id: the padding token id (masked out).
        batch_size: prompts per forward pass; batches hold prompts of similar length.
    """
    import torch

    from llmhni_local.audit.finetune_runner import batch_tensors

    if not len(rows):
        return np.zeros((0, len(layers), int(model.config.hidden_size)), dtype=np.float32)
    out = np.zeros((len(rows), len(layers), int(model.config.hidden_size)), dtype=np.float32)
    order = np.argsort([len(r) for r in rows], kind="stable")
    with torch.inference_mode():
        for b0 in range(0, len(order), batch_size):
            sel = order[b0:b0 + batch_size]
            ids, mask, pos = batch_tensors([rows[k] for k in sel], pad_id)
            got = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                        output_hidden_states=True, logits_to_keep=1, use_cache=False)
            for j, layer in enumerate(layers):
                out[sel, j] = got.hidden_states[layer][:, -1, :].float().numpy()
    return out


def view_tails(tokenizer: Any, templates: dict, max_liked: int) -> dict[str, str]:
    """Per view, the rendered prompt's text after its last placeholder value: the fixed tail
    (question, end of turn, assistant cue) by which a rendered prompt's view is known when the
    backend is handed prompts without their view."""
    from llmhni_local.llm.chat import render_prompts
    from llmhni_local.llm.prompts import VIEW_TEMPLATES

    mark = "\u241fPROBE-SLOT\u241f"
    tails = {}
    for view, name in VIEW_TEMPLATES.items():
        values = {"user_profile": mark, "item_profile": mark, "liked_items": mark}
        (text,) = render_prompts(tokenizer, [templates[name].messages(values)])
        tails[view] = text.rsplit(mark, 1)[-1] if mark in text else text
    return tails


def views_of(texts: Sequence[str], tails: dict[str, str]) -> list[str]:
    """The view of each rendered prompt by its tail; a prompt with neither tail is an error
    (the probe was fitted on other templates)."""
    from llmhni_local.errors import UserError

    ordered = sorted(tails.items(), key=lambda kv: -len(kv[1]))  # longest tail decides
    out = []
    for k, text in enumerate(texts):
        view = next((v for v, tail in ordered if tail and text.endswith(tail)), None)
        if view is None:
            raise UserError(f"prompt {k} ends like neither view's template the probe was fitted "
                            "on (other prompts?); fit the probe again on these templates")
        out.append(view)
    return out
