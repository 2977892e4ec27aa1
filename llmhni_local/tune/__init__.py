"""Tuning a rater on audited labels: a LoRA adapter (``finetune``, on transformers' Trainer,
with its parts in ``finetune_settings``, ``finetune_examples``, ``finetune_runner``,
``finetune_trainer``, ``finetune_card``) or a probe (``probe``: a linear head per view on the
hidden state at the answer position, fitted by ``probe_head``).

What is tuned is served by the rater room below: adapters and their checks in
:mod:`llmhni_local.weights.adapters`, the fitted probe in :mod:`llmhni_local.weights.probe` and its
hidden states in :mod:`llmhni_local.backends.probe_states`.
"""
