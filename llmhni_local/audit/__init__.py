"""The audit loop: export rated pairs for people to label, import their labels, measure how
far each rater agrees with them, and fine-tune the rater (LoRA) on them.

Modules: ``export`` (stratified samples), ``importer`` (validated imports), ``labels`` (the
``RUN/audit/audit.sqlite`` store), ``agreement`` (kappa and friends, pure functions),
``report`` (``RUN/audit/report.md``), ``simulate`` (MovieLens ratings as labels),
``finetune`` (peft LoRA) and ``adapters`` (card and serving checks).
"""
