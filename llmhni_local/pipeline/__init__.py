"""The whole method, stage by stage, in one run folder: :func:`llmhni_local.pipeline.runner.run_pipeline`.

Stages, in order (``python cli.py run --config configs/ml100k.toml``)::

    data -> profiles -> embed -> align -> rec_pre -> candidates -> tune -> rate
         -> verdicts -> train -> report

Each stage is a module of :mod:`llmhni_local.stages` (the plan, the keys and the run's settings
live there too); this room only walks the plan (:mod:`~llmhni_local.pipeline.runner`) and
writes ``RUN/manifest.json`` (:mod:`~llmhni_local.pipeline.manifest`: models with hashes,
prompt hashes, settings, versions, seeds).

A stage whose key (the settings and content it reads, and the keys of the stages it reads
from) is unchanged and whose outputs exist is reused without work; ``--from STAGE`` runs that
stage and every later one again.

Run folder layout::

    RUN/profiles/  RUN/embeddings/  RUN/align/  RUN/rec_pre/ (a train run)
    RUN/candidates.parquet  RUN/tune/ (tune.kind = "probe")  RUN/judgments.sqlite  RUN/rating.json
    RUN/verdicts.parquet  RUN/verdicts.json  RUN/train/<method>/seed<k>/ (train runs)
    RUN/train_store/<key>/ (every finished train run, by its key: a setting changed back is free)
    RUN/results.json  RUN/report.md  RUN/plots/*.png  RUN/stages/<stage>.json (keys, timings)
"""
