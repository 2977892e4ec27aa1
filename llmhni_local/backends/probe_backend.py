"""The probe rater: hidden state at the answer position -> a linear head -> label probabilities.

Chosen when ``rater.adapter`` names a probe folder (``finetune-rater --kind probe``, see
:mod:`llmhni_local.tune.probe`). Prompts are rendered by ``chat.py`` exactly as for the other
backends; each request names its view, whose head reads the state of the layer it was fitted
on, in the dtype it was fitted in. A rendered prompt must end as its view's template did when
the probe was fitted (the card records both views' tails): a probe fitted on other templates
is refused rather than read.

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

from llmhni_local.backends.common import RaterCore, prompts_of
from llmhni_local.backends.probe_states import answer_states, check_tails, load_base
from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.engine.api import LABELS, JudgeRequest, Judgment, unserved
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.weights.probe import load_probe, probe_problems


class ProbeRater(RaterCore):
    """Rates chat prompts with a probe folder's heads on the base model's hidden states."""

    loglikelihood = unserved("loglikelihood", "a probe reads labels only; read likelihoods "
                                              "with the base model (no probe adapter)")

    def __init__(self, settings: RaterSettings) -> None:
        if not settings.adapter:
            raise ConfigError("the probe backend needs rater.adapter (a probe folder)")
        if settings.backend == "openai":
            raise ConfigError(f"rater.adapter {settings.adapter} is a probe, served in-process "
                              "by transformers; rater.backend 'openai' cannot serve it")
        self.model = None
        super().__init__(settings)  # model and folder checks, tokenizer; no weights yet
        problems = probe_problems(self.adapter, base=str(self.spec.path))
        if problems:  # e.g. a probe fitted on another base model: before the weights load
            raise UserError(problems[0])
        self.card, self.heads = load_probe(self.adapter)
        self.tails: dict[str, str] = dict(self.card["prompts"]["tails"])

        self.model = load_base(str(self.spec.path), self.card["dtype"], settings.device)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    def head_probs(self, requests: Sequence[JudgeRequest]) -> np.ndarray:
        """``(n, 3)`` head probabilities (LABELS order) of the requests' prompts, each read
        by the head of the request's view."""
        texts = self.prompt_texts(prompts_of(requests))
        ids = self.prompt_ids(texts)
        views = np.asarray(check_tails(texts, [r.view for r in requests], self.tails))
        out = np.zeros((len(texts), len(LABELS)))
        for view, (layer, head) in self.heads.items():
            sel = np.flatnonzero(views == view)
            if len(sel):
                states = answer_states(self.model, [ids[k] for k in sel], [layer], self.pad_id,
                                       self.settings.batch_size)
                out[sel] = head.probs(states[:, 0])
        self.count_tokens(sum(len(r) for r in ids), prompts=len(ids))
        return out

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        probs = self.head_probs(requests)
        out = []
        for row in probs:
            label = LABELS[int(np.argmax(row))]
            out.append(Judgment(text=label, label=label,
                                probs={lab: float(p) for lab, p in zip(LABELS, row)},
                                label_mass=None, decided_by="probe"))
        return out

    def close(self) -> None:
        self.model = None
        super().close()
