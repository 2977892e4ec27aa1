"""Plain transformers: the same prompts and the same label scoring as vLLM, without an engine.

Prompts are batched ``batch_size`` at a time with left padding (so every prompt's answer
position is the last column). One ``generate`` call per batch does greedy decoding of
``max_tokens`` tokens (1 by default: the prefill alone); its prefill computes logits at the
last position only (transformers' ``logits_to_keep``), and those first-step logits give the
label probabilities after the answer cue, as vLLM's raw logprobs do. In fp32 the two backends
agree to about 1e-5 on the same prompts. There is no prefix cache here: every prompt token is
computed (``token_stats()`` counts them, none cached). The likelihood reader and labels that
split into several tokens go through :meth:`TransformersRater.loglikelihood_ids`, which keeps
each shared context's KV cache and reuses it for every continuation after it.
With ``batch_size=1`` this is the plain one-prompt-at-a-time ``generate`` loop.
"""

from __future__ import annotations

from typing import Any, Sequence

from llmhni_local.backends.common import RaterCore, prompts_of
from llmhni_local.backends.probe_states import _decoder
from llmhni_local.core.device import resolve_device
from llmhni_local.engine.api import JudgeRequest, Judgment
from llmhni_local.engine.chat import Messages
from llmhni_local.engine.settings import RaterSettings

_DTYPES = {"bfloat16": "bfloat16", "float32": "float32", "float16": "float16", "auto": "auto"}


def torch_dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, _DTYPES[name])


class TransformersRater(RaterCore):
    """Rates chat prompts with ``AutoModelForCausalLM`` (and a peft adapter when given)."""

    def __init__(self, settings: RaterSettings) -> None:
        super().__init__(settings)  # every check before the weights load
        from transformers import AutoModelForCausalLM

        device = resolve_device(settings.device, name="rater.device")
        model = AutoModelForCausalLM.from_pretrained(
            str(self.spec.path), dtype=torch_dtype(self.dtype), local_files_only=True)
        if self.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter))
        self.model = model.to(device).eval()
        eos = model.generation_config.eos_token_id
        self._eos = self.tokenizer.eos_token_id if eos is None else eos
        self._gen = self._generation_config(settings.max_tokens, read_labels=True)

    def _generation_config(self, max_new_tokens: int, read_labels: bool) -> Any:
        from transformers import GenerationConfig

        return GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False,  # greedy, as vLLM's temperature 0
            eos_token_id=self._eos, pad_token_id=self.tokenizer.pad_token_id,
            output_logits=read_labels, return_dict_in_generate=True,  # raw first-step logits
        )

    def _batch(self, texts: list[str], gen: Any = None, wanted: Sequence[int] = ()
               ) -> list[tuple[str, dict[int, float]]]:
        import torch

        gen = gen or self._gen
        enc = self.tokenizer(texts, add_special_tokens=False, padding=True,
                             padding_side="left", return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=gen)
        new = out.sequences[:, enc["input_ids"].shape[1]:]
        if out.logits is None or not wanted:  # free generation: no label read
            label_lp: list[list[float]] = [[] for _ in texts]
        else:
            first = torch.log_softmax(out.logits[0].float(), dim=-1)  # (batch, vocab)
            label_lp = first[:, torch.tensor(list(wanted))].tolist()
        results = []
        for row, lps in zip(new.tolist(), label_lp):
            # A byte-level token cut mid-character decodes to U+FFFD; vLLM's incremental
            # detokenizer holds such a tail back, so drop it here too (same text everywhere).
            text = self.tokenizer.decode(row, skip_special_tokens=True).rstrip("\ufffd")
            results.append((text, dict(zip(wanted, lps))))
        return results

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        prompts = prompts_of(requests)
        if self.needs_sequences(prompts):  # a label split into several tokens
            return self.rate_sequences(prompts)
        return super().judge(requests)

    def read_batch(self, texts: list[str], ids: list[list[int]], wanted: Sequence[int]
                   ) -> list[tuple[str, dict[int, float]]]:
        self.count_tokens(sum(len(r) for r in ids), 0, len(texts))
        return self._batch(texts, wanted=wanted)

    def loglikelihood_ids(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Summed continuation log-probabilities, each distinct context computed once.

        Requests are sorted so equal contexts are adjacent and taken ``batch_size`` at a time.
        A chunk's distinct contexts run in one right-padded forward pass with their KV cache
        kept; the first continuation token is read off each context's last real position.
        The cache rows are then gathered per request and all continuations (right-padded)
        run in a second pass on them, so a judgment costs its continuation's tokens and its
        share of the context, not the whole prompt."""
        import torch

        for k, (ctx, cont) in enumerate(requests):
            if not ctx or not cont:
                raise ValueError(f"request {k}: empty context or continuation")
        order = sorted(range(len(requests)), key=lambda k: (requests[k][0], k))
        out = [0.0] * len(requests)
        size = max(1, self.settings.batch_size)
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                lls, n_tokens = self._chunk([requests[k] for k in chunk])
                for k, ll in zip(chunk, lls):
                    out[k] = ll
                self.count_tokens(n_tokens, 0, 0)  # computed tokens: contexts once, then names
        return out

    def _chunk(self, reqs: list[tuple[list[int], list[int]]]) -> tuple[list[float], int]:
        import torch

        decoder, head = _decoder(self.model), self.model.get_output_embeddings()
        dev, pad = self.model.device, self.tokenizer.pad_token_id
        ctxs = list(dict.fromkeys(tuple(c) for c, _ in reqs))
        of = {c: k for k, c in enumerate(ctxs)}
        lens = torch.tensor([len(c) for c in ctxs])
        width = int(lens.max())
        ids = torch.full((len(ctxs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ctxs), width), dtype=torch.long)
        for k, c in enumerate(ctxs):
            ids[k, :len(c)] = torch.tensor(c)
            mask[k, :len(c)] = 1
        pre = decoder(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=True)
        last_h = pre.last_hidden_state[torch.arange(len(ctxs)), (lens - 1).to(dev)]
        last = torch.log_softmax(head(last_h).float(), dim=-1)  # (contexts, vocab)
        rows = torch.tensor([of[tuple(c)] for c, _ in reqs])
        totals = [float(last[r, cont[0]]) for r, (_, cont) in zip(rows.tolist(), reqs)]
        n_tokens = int(lens.sum()) + sum(len(c) for _, c in reqs)
        longest = max(len(c) for _, c in reqs) - 1
        if longest == 0:
            return totals, n_tokens
        cache = pre.past_key_values
        cache.batch_select_indices(rows.to(dev))  # one row of the context's cache per request
        cids = torch.full((len(reqs), longest), pad, dtype=torch.long)
        cmask = torch.zeros((len(reqs), width + longest), dtype=torch.long)
        cmask[:, :width] = mask[rows]
        for r, (_, cont) in enumerate(reqs):  # feed all but the last name token
            cids[r, :len(cont) - 1] = torch.tensor(cont[:-1])
            cmask[r, width:width + len(cont) - 1] = 1
        pos = lens[rows][:, None] + torch.arange(longest)[None, :]
        step = decoder(input_ids=cids.to(dev), attention_mask=cmask.to(dev),
                       position_ids=pos.to(dev), past_key_values=cache, use_cache=True)
        lp = torch.log_softmax(head(step.last_hidden_state).float(), dim=-1)
        for r, (_, cont) in enumerate(reqs):
            if len(cont) > 1:
                tgt = torch.tensor(cont[1:], device=lp.device)
                totals[r] += float(lp[r, torch.arange(len(cont) - 1), tgt].sum())
        return totals, n_tokens

    def generate(self, prompts: Sequence[Messages], max_tokens: int) -> list[str]:
        """Free greedy generation (e.g. profile summaries), same prompt rendering."""
        texts = self.prompt_texts(prompts)
        gen = self._generation_config(max_tokens, read_labels=False)
        out: list[str] = []
        size = self.settings.batch_size
        for start in range(0, len(texts), size):
            out += [t for t, _ in self._batch(texts[start:start + size], gen)]
        return out

    def close(self) -> None:
        self.model = None
        super().close()
