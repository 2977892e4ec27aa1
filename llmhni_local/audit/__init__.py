"""The audit loop: export rated pairs for people to label, import their labels, measure how
far each rater agrees with them, and tune the rater on them (a LoRA adapter or a probe).

Modules: ``export`` (stratified samples), ``importer`` (validated imports), ``records`` (the
``RUN/audit/audit.sqlite`` store), ``agreement`` (kappa and friends, pure functions),
``report`` (``RUN/audit/report.md``), ``simulated_audits`` (MovieLens ratings as labels),
``finetune`` (peft LoRA; its parts in ``finetune_settings``, ``finetune_examples``,
``finetune_runner``, ``finetune_checkpoints``, ``finetune_card``), ``probe`` (a linear head on
the hidden state at the answer position; ``probe_states``, ``probe_head``) and ``adapters``
(card and serving checks).
"""
