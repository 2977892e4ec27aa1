"""The audit room: export rated pairs for people to label, import their labels, and measure
how far each rater agrees with them.

Modules: ``export`` (stratified samples), ``importer`` (validated imports), ``records`` (the
``RUN/audit/audit.sqlite`` store, and the labels the verdict rules may fit on), ``agreement``
(kappa and friends, pure functions), ``report`` (``RUN/audit/report.md``) and
``simulated_audits`` (MovieLens ratings read as labels, marked as simulated). Tuning the
rater on these labels is the room above (:mod:`llmhni_local.tune`); verdicts take the labels
as data (:mod:`llmhni_local.verdicts`).
"""
