"""Hidden states at the answer position: what a probe head reads, at fitting and at rating.

The prompt text always comes from :func:`llmhni_local.engine.chat.render_prompts` on the rating
stage's view messages, so the probe sees the very prompt the rater sees; the answer position is
the prompt's last token (the rendered prompt ends with the open assistant turn and its cue, so
the next token is the label). The base model's decoder (``model.model``: no language-model
head, so no logits at all) runs once per prompt through transformers and stops at the deepest
layer asked for: forward hooks on the embeddings, the decoder layers and the final norm copy the
last position's state, and the hook of the deepest index asked for ends the pass by raising a
private exception (the layers after it never run; a probe on the middle layer pays half the
prefill). Prompts are length-sorted into batches, left-padded (so every prompt's last token is
the batch's last column, with positions counted from its first real token), under
``inference_mode``. The states equal those of a full pass with ``output_hidden_states``
(tested).

Layer numbering is transformers': index ``k`` is the state after ``k`` decoder layers (0: the
embeddings) and index ``n_layers`` is the final norm's output, the state the language-model
head reads.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from llmhni_local.core.device import resolve_device
from llmhni_local.core.errors import UserError
from llmhni_local.core.offline import enforce_offline
from llmhni_local.core.precision import resolve_dtype
from llmhni_local.engine.chat import batch_tensors, render_prompts
from llmhni_local.engine.prompts import VIEW_TEMPLATES


def state_dtype() -> str:
    """The dtype to run the base model in for ``probe.dtype = "auto"``: the rater's own
    hardware rule (``core/precision.py``: bfloat16 on a CPU with AVX-512 BF16 or AMX, else
    float32). The states are read on the CPU; a probe is served in the dtype it was fitted in."""
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


def load_base(path: str, dtype: str, device: str = "cpu") -> Any:
    """The base causal LM in ``dtype`` (offline), in eval mode, on ``device`` (``auto``,
    ``cpu``, ``cuda[:N]``; ``rater.device`` when served)."""
    import torch
    from transformers import AutoModelForCausalLM

    enforce_offline()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype),
                                                 local_files_only=True)

    return model.to(resolve_device(device, name="rater.device")).eval()


class _Done(Exception):
    """Raised by the hook of the deepest layer asked for: ends the forward pass there."""


def _decoder(model: Any) -> Any:
    """The decoder stack of a transformers causal LM (embeddings, layers, final norm)."""
    decoder = getattr(model, "model", None)
    if not all(hasattr(decoder, a) for a in ("embed_tokens", "layers", "norm")):
        raise UserError(f"{type(model).__name__}: no decoder with embed_tokens, layers and norm "
                        "under .model; the probe reads hidden states of such models only")
    return decoder


def _hook_points(decoder: Any, layers: Sequence[int]) -> dict[int, Any]:
    """Hidden-state index -> the module whose output is that state (module docstring)."""
    n = len(decoder.layers)
    bad = [k for k in layers if not 0 <= k <= n]
    if bad:
        raise ValueError(f"hidden-state indices {bad} outside 0..{n} ({n} decoder layers)")
    return {k: decoder.embed_tokens if k == 0 else decoder.norm if k == n
            else decoder.layers[k - 1] for k in set(layers)}


def answer_states(model: Any, rows: Sequence[Sequence[int]], layers: Sequence[int],
                  pad_id: int, batch_size: int = 16,
                  advance: Callable[[int], None] | None = None) -> np.ndarray:
    """``(len(rows), len(layers), hidden)`` float32 states at each prompt's last token.

    Args:
        model: a transformers causal LM (eval mode) with its decoder at ``model.model``.
        rows: token ids of rendered prompts (:func:`llmhni_local.engine.chat.encode_prompts`).
        layers: hidden-state indices to keep (see the module docstring).
        pad_id: the padding token id (masked out).
        batch_size: prompts per forward pass; batches hold prompts of similar length.
        advance: called with each batch's size once its states are read (a progress bar).
    """
    import torch

    out = np.zeros((len(rows), len(layers), int(model.config.hidden_size)), dtype=np.float32)
    if not len(rows):
        return out
    decoder = _decoder(model)
    points = _hook_points(decoder, layers)
    deepest, got = max(points), {}

    def hook_for(k: int):
        def hook(_module, _inputs, output):
            state = output[0] if isinstance(output, tuple) else output
            got[k] = state[:, -1, :].to(torch.float32, copy=True)
            if k == deepest:
                raise _Done
        return hook

    handles = [module.register_forward_hook(hook_for(k)) for k, module in points.items()]
    order = np.argsort([len(r) for r in rows], kind="stable")
    try:
        with torch.inference_mode():
            for b0 in range(0, len(order), batch_size):
                sel = order[b0:b0 + batch_size]
                ids, mask, pos = batch_tensors([rows[k] for k in sel], pad_id)
                dev = model.device  # the states come back to the CPU below
                got.clear()
                try:
                    decoder(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                            position_ids=pos.to(dev), use_cache=False)
                except _Done:
                    pass
                for j, layer in enumerate(layers):
                    out[sel, j] = got[layer].cpu().numpy()
                if advance is not None:
                    advance(len(sel))
    finally:
        for handle in handles:
            handle.remove()
    return out


def view_tails(tokenizer: Any, templates: dict, max_liked: int) -> dict[str, str]:
    """Per view, the rendered prompt's text after its last placeholder value: the fixed tail
    (question, end of turn, assistant cue) that every prompt of the view ends with. The probe
    card records them; :func:`check_tails` holds a served prompt to them."""
    mark = "\u241fPROBE-SLOT\u241f"
    tails = {}
    for view, name in VIEW_TEMPLATES.items():
        values = {"user_profile": mark, "item_profile": mark, "liked_items": mark}
        (text,) = render_prompts(tokenizer, [templates[name].messages(values)])
        tails[view] = text.rsplit(mark, 1)[-1] if mark in text else text
    return tails


def check_tails(texts: Sequence[str], views: Sequence[str | None],
                tails: dict[str, str]) -> list[str]:
    """The views of rendered prompts, as their requests name them; a request without a view,
    with a view the probe has no head for, or whose prompt does not end as that view's
    template did at fitting (other prompts), is an error."""
    out = []
    for k, (text, view) in enumerate(zip(texts, views)):
        if view is None:
            raise UserError(f"prompt {k}: the probe backend reads each view with its own head "
                            "and needs the request's view ('user' or 'item')")
        if view not in tails:
            raise UserError(f"prompt {k}: the probe has no head for view {view!r} "
                            f"(it has {sorted(tails)})")
        if not (tails[view] and text.endswith(tails[view])):
            raise UserError(f"prompt {k} ({view} view) does not end like the {view} template "
                            "the probe was fitted on (other prompts?); fit the probe again on "
                            "these templates")
        out.append(view)
    return out
