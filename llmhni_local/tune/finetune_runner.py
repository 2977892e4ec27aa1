"""Answer-position logits of fine-tuning examples: batching, the frozen-prefix cache, the loss
targets, class weights and validation figures.

Prompts are left-padded (positions counted from each prompt's first real token) and the model
computes logits for the last few positions alone (``logits_to_keep``), much cheaper than
full-sequence labels (0.67 vs 0.97 s per example on 2 cores, docs/BENCHMARKS.md). The
Trainer's data come from here: :class:`LengthBatchSampler` (length-sorted, seeded batches per
epoch) and :class:`AnswerCollator` (a batch's inputs and answer positions).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import numpy as np

from llmhni_local.audit.agreement import agreement
from llmhni_local.engine.api import LABELS
from llmhni_local.engine.chat import batch_tensors
from llmhni_local.tune.finetune_examples import Examples


def answer_logits(model, rows: Sequence[Sequence[int]], pad_id: int, dtype: str, keep: int = 1):
    """``(batch, keep, vocab)`` float32 logits at the last ``keep`` positions (full pass)."""
    import torch

    ids, mask, pos = batch_tensors(rows, pad_id)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep,
                    use_cache=False)
    return out.logits[:, -keep:, :].float()


def answer_targets(answers: Sequence[Sequence[int]]):
    """For a batch whose last ``K = max len`` positions' logits were kept: ``(rows, cols,
    tokens, first)``: the flat (row, window column) of every answer token with its target
    token, and the window column of each example's first answer token."""
    import torch

    k = max(len(a) for a in answers)
    rows, cols, toks, first = [], [], [], []
    for r, a in enumerate(answers):
        first.append(k - len(a))
        for j, t in enumerate(a):
            rows.append(r)
            cols.append(k - len(a) + j)
            toks.append(t)
    return (torch.tensor(rows), torch.tensor(cols), torch.tensor(toks), torch.tensor(first), k)


def length_batches(lengths: Sequence[int], batch_size: int,
                   rng: np.random.Generator | None = None, jitter: int = 8) -> list[np.ndarray]:
    """Batches of example indices that hold prompts of similar length, so left padding wastes
    little (on SmolLM2 prompts of ~200 and ~280 tokens, a step on length-sorted batches took
    0.50 s per example against 0.65 s on random ones). With ``rng`` (training): lengths get a
    random jitter of up to ``jitter`` tokens before sorting, so batches differ between epochs,
    and the batches come in a random order. Without: sorted, in order (caching, validation).

    >>> [b.tolist() for b in length_batches([5, 1, 4, 2], 2)]
    [[1, 3], [2, 0]]
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    key = lengths + (rng.uniform(0, jitter, len(lengths)) if rng is not None else 0.0)
    order = np.argsort(key, kind="stable")
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


class LengthBatchSampler:
    """The training batches of one epoch for a ``DataLoader``: :func:`length_batches` with
    the seed ``[seed, epoch]``, so each epoch has its own order and a resumed run the same
    one; the Trainer sets the epoch (``set_epoch``) before it iterates."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        for batch in length_batches(self.lengths, self.batch_size, rng):
            yield batch.tolist()


class AnswerCollator:
    """A training batch from example indices: the model inputs (:meth:`Runner.inputs`,
    left-padded) and where the loss is taken: the flat (row, window column) of every answer
    token with its target (:func:`answer_targets`), the column of each example's first
    answer token, the label index, and ``keep``, how many last positions need logits."""

    def __init__(self, runner: Runner, name: str, ex: Examples) -> None:
        self.runner, self.name, self.ex = runner, name, ex

    def __call__(self, sel: Sequence[int]) -> dict[str, Any]:
        import torch

        sel = list(sel)
        rows, cols, toks, first, keep = answer_targets([self.ex.answer[j] for j in sel])
        return {"inputs": self.runner.inputs(self.name, self.ex, sel), "keep": keep,
                "rows": rows, "cols": cols, "tokens": toks, "first": first,
                "target": torch.as_tensor(self.ex.target[sel])}


def padded_states(hidden: Sequence[Any]) -> dict[str, Any]:
    """Per-prompt ``(tokens, hidden)`` states, left-padded into a batch of ``inputs_embeds``
    with its attention mask and positions (counted from each prompt's first real token)."""
    import torch

    lengths = [h.shape[0] for h in hidden]
    width, size = max(lengths), hidden[0].shape[-1]
    x = torch.zeros((len(hidden), width, size), dtype=hidden[0].dtype)
    mask = torch.zeros((len(hidden), width), dtype=torch.long)
    for k, h in enumerate(hidden):
        x[k, width - lengths[k]:] = h
        mask[k, width - lengths[k]:] = 1
    return {"inputs_embeds": x, "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


class _Stop(Exception):
    """Raised by a forward hook to stop a pass once the frozen layers are done."""


class Runner:
    """Answer-position logits of examples, through the whole model or, with a frozen-prefix
    cache, through the tuned top layers only (the layers below are run once per prompt)."""

    def __init__(self, model, pad_id: int, dtype: str, cut: int = 0,
                 memo: dict | None = None) -> None:
        self.model, self.pad_id, self.dtype = model, pad_id, dtype
        self.memo = memo  # prompt ids -> frozen-prefix states, shared between runs (see finetune)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner = getattr(base, "model", None)
        ok = cut > 0 and inner is not None and hasattr(inner, "layers") and cut < len(inner.layers)
        self.inner, self.cut = (inner, cut) if ok else (None, 0)
        self.cache: dict[str, list] = {}

    def prefix(self, rows: Sequence[Sequence[int]]) -> list:
        """Hidden states after the frozen layers, one ``(tokens, hidden)`` tensor per prompt."""
        import torch

        ids, mask, pos = batch_tensors(rows, self.pad_id)
        got: dict[str, Any] = {}

        def hook(module, args, output):
            got["h"] = output[0] if isinstance(output, tuple) else output
            raise _Stop

        handle = self.inner.layers[self.cut - 1].register_forward_hook(hook)
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                 enabled=self.dtype == "bfloat16"):
                self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        h = got["h"].float()
        width = h.shape[1]
        return [h[k, width - len(r):].clone() for k, r in enumerate(rows)]

    def build_cache(self, name: str, ex: Examples, batch_size: int) -> int:
        """Frozen-prefix states of every example (length-sorted batches); returns how many
        came from the memo instead of a forward pass."""
        out: list = [None] * len(ex.ids)
        memo = self.memo if self.memo is not None else {}  # a throwaway one: same code path
        todo = []
        for k, row in enumerate(ex.ids):
            hit = memo.get((self.cut, tuple(row)))
            if hit is None:
                todo.append(k)
            else:
                out[k] = hit
        for sel in length_batches([len(ex.ids[k]) for k in todo], batch_size):
            picked = [todo[j] for j in sel]
            for k, h in zip(picked, self.prefix([ex.ids[k] for k in picked])):
                out[k] = memo[(self.cut, tuple(ex.ids[k]))] = h
        self.cache[name] = out
        return len(ex.ids) - len(todo)

    def inputs(self, name: str, ex: Examples, sel: Sequence[int]) -> dict[str, Any]:
        """The model inputs of examples ``sel``, left-padded (positions count from each
        prompt's first real token): their token ids or, where ``name`` is cached, their
        states after the frozen layers (``inputs_embeds`` of the tuned layers)."""
        if name in self.cache:
            return padded_states([self.cache[name][k] for k in sel])
        ids, mask, pos = batch_tensors([ex.ids[k] for k in sel], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}

    @contextlib.contextmanager
    def _top_layers_only(self):
        # The model runs its decoder layers as `self.layers[:n]`: hand it the tuned ones for
        # this one call (the module names, and so the saved weights, are restored).
        import torch

        full = self.inner.layers
        self.inner.layers = torch.nn.ModuleList(list(full)[self.cut:])
        try:
            yield
        finally:
            self.inner.layers = full

    def forward(self, inputs: dict[str, Any], keep: int = 1, model: Any = None):
        """``(batch, keep, vocab)`` float32 logits of the last ``keep`` positions of a batch
        from :meth:`inputs`; the model computes no others (``logits_to_keep``)."""
        import torch

        model = self.model if model is None else model
        top = "inputs_embeds" in inputs
        with (self._top_layers_only() if top else contextlib.nullcontext()), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"):
            out = model(**inputs, logits_to_keep=keep, use_cache=False)
        return out.logits[:, -keep:, :].float()

    def logits(self, name: str, ex: Examples, sel: Sequence[int], keep: int = 1):
        """``(batch, keep, vocab)`` logits of the last ``keep`` positions of ``sel``."""
        return self.forward(self.inputs(name, ex, sel), keep)

    def check(self, ex: Examples, sel: Sequence[int], atol: float = 1e-3) -> float:
        """Largest difference between cached and full-pass logits on ``sel`` (eval mode)."""
        import torch

        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            full = answer_logits(self.model, [ex.ids[k] for k in sel], self.pad_id, self.dtype, 3)
            split = self.forward(padded_states(self.prefix([ex.ids[k] for k in sel])),
                                 3)
        if was:
            self.model.train()
        return float((full - split).abs().max())


def class_weights(targets: np.ndarray, how: str) -> np.ndarray:
    """Per-label loss weights: ``n / (K n_label)`` (``balanced``; 0 for an absent label) or 1.

    >>> class_weights(np.array([0, 0, 0, 1]), "balanced").round(3).tolist()
    [0.444, 1.333, 0.0]
    """
    k = len(LABELS)
    if how == "none":
        return np.ones(k)
    counts = np.bincount(targets, minlength=k).astype(float)
    return np.where(counts > 0, len(targets) / (k * np.maximum(counts, 1)), 0.0)


def evaluate_examples(runner: Runner, name: str, ex: Examples, label_ids: Sequence[int],
                      batch_size: int) -> dict[str, Any]:
    """Label probabilities of every example and agreement with the targets, per view and
    pooled (the predicted label is the most probable of the three label tokens)."""
    import torch
    import torch.nn.functional as F

    if not len(ex.ids):
        return {}
    model = runner.model
    was_training = model.training
    model.eval()
    n = len(ex.ids)
    p, losses, masses = np.zeros((n, len(LABELS))), np.zeros(n), np.zeros(n)
    tid = torch.tensor(list(label_ids))
    with torch.no_grad():
        for sel in length_batches([len(r) for r in ex.ids], batch_size):
            _, _, _, first, k = answer_targets([ex.answer[j] for j in sel])
            window = runner.logits(name, ex, sel, k)
            logits = window[torch.arange(len(sel)), first]  # where the label is scored
            target = torch.as_tensor(ex.target[sel])
            losses[sel] = F.cross_entropy(logits, tid[target], reduction="none").numpy()
            logp = torch.log_softmax(logits, dim=-1)[:, tid]
            masses[sel] = logp.exp().sum(-1).numpy()
            p[sel] = torch.softmax(logp, dim=-1).numpy()
    if was_training:
        model.train()
    pred = [LABELS[k] for k in p.argmax(1)]
    truth = [LABELS[k] for k in ex.target]
    views = ex.view
    out: dict[str, Any] = {"loss": float(np.mean(losses)), "label_mass": float(np.mean(masses))}
    pooled = agreement(truth, pred)
    out.update(kappa=pooled["kappa"], weighted_kappa=pooled["weighted_kappa"],
               accuracy=pooled["accuracy"], n=pooled["n"], confusion=pooled["confusion"],
               pred_counts={lab: pred.count(lab) for lab in LABELS})
    out["per_view"] = {}
    for view in sorted(set(views.tolist())):
        m = views == view
        a = agreement([t for t, k in zip(truth, m) if k], [q for q, k in zip(pred, m) if k])
        out["per_view"][view] = {"kappa": a["kappa"], "weighted_kappa": a["weighted_kappa"],
                                 "accuracy": a["accuracy"], "n": a["n"]}
    return out
