"""Where verdicts are decided: from a rater's judgments of a candidate's two views to hard
(keep / add) or noisy (remove / leave out).

``rules`` holds the rule settings and the pure rules (argmax, threshold at a share or from
audits, stacked, batch calibration); ``decide`` applies them to a run's judgments and writes
``verdicts.parquet`` and ``verdicts.json``; ``imported`` checks and writes verdicts made elsewhere,
brought in as a file (docs/IMPORTING.md). Audited labels come in as data
(:class:`~llmhni_local.verdicts.decide.Audits`), so this room never reads the audit store.
"""
