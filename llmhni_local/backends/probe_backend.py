"""The probe rater: hidden state at the answer position -> a linear head -> label probabilities.

Chosen when ``rater.adapter`` names a probe folder (``finetune-rater --kind probe``, see
:mod:`llmhni_local.tune.probe`). Prompts are rendered by ``chat.py`` exactly as for the other
backends; each prompt's view is known by its rendered tail (the card records both views'), and
the view's head reads the state of the layer it was fitted on, in the dtype it was fitted in.

Served by transformers, not vLLM: vLLM 0.32's pooling runners (``LLM.encode`` / classify) pool
the final layer's normed state only (``PoolerConfig`` has no layer choice), while the probe's
best layer is often a middle one; the hidden-state export vLLM has
(``speculative_config.method = "extract_hidden_states"``) belongs to speculative decoding and
hands the states to a KV connector, not to a pooler. A transformers forward pass that stops at
the needed layer's output costs the same prefill as vLLM without its prefix cache.

Judgments: ``probs`` are the head's class probabilities, ``label`` their argmax, ``text`` the
label (nothing is generated), ``label_mass`` ``None`` (a head spreads all its mass over the
labels; ``rate.min_label_mass`` is a floor on label-token mass and does not apply), and
``decided_by = "probe"``. Rows are stored under the backend's ``model_id``, which holds the
probe folder's content hash, beside the base model's rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from llmhni_local.backends.common import RaterCore
from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.engine.api import LABELS, Judgment
from llmhni_local.engine.chat import Messages
from llmhni_local.engine.settings import RaterSettings


class ProbeRater(RaterCore):
    """Rates chat prompts with a probe folder's heads on the base model's hidden states."""

    def __init__(self, settings: RaterSettings) -> None:
        from llmhni_local.weights.probe import load_probe, probe_problems

        if not settings.adapter:
            raise ConfigError("the probe backend needs rater.adapter (a probe folder)")
        if settings.backend == "openai":
            raise ConfigError(f"rater.adapter {settings.adapter} is a probe, served in-process "
                              "by transformers; rater.backend 'openai' cannot serve it")
        super().__init__(settings)  # model and folder checks, tokenizer; no weights yet
        problems = probe_problems(self.adapter, base=str(self.spec.path))
        if problems:  # e.g. a probe fitted on another base model: before the weights load
            raise UserError(problems[0])
        self.card, self.heads = load_probe(self.adapter)
        self.tails: dict[str, str] = dict(self.card["prompts"]["tails"])
        from llmhni_local.backends.probe_states import load_base

        self.model = load_base(str(self.spec.path), self.card["dtype"], settings.device)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    def head_probs(self, prompts: Sequence[Messages]) -> np.ndarray:
        """``(n, 3)`` head probabilities (LABELS order) of rendered ``prompts``."""
        from llmhni_local.backends.probe_states import answer_states, views_of

        texts = self.prompt_texts(prompts)
        ids = self.prompt_ids(texts)
        views = np.asarray(views_of(texts, self.tails))
        out = np.zeros((len(texts), len(LABELS)))
        for view, (layer, head) in self.heads.items():
            sel = np.flatnonzero(views == view)
            if len(sel):
                states = answer_states(self.model, [ids[k] for k in sel], [layer], self.pad_id,
                                       self.settings.batch_size)
                out[sel] = head.probs(states[:, 0])
        self.count_tokens(sum(len(r) for r in ids), prompts=len(ids))
        return out

    def rate(self, prompts: Sequence[Messages]) -> list[Judgment]:
        probs = self.head_probs(prompts)
        out = []
        for row in probs:
            label = LABELS[int(np.argmax(row))]
            out.append(Judgment(text=label, label=label,
                                probs={lab: float(p) for lab, p in zip(LABELS, row)},
                                label_mass=None, decided_by="probe"))
        return out

    def close(self) -> None:
        self.model = None
