"""The whole method, stage by stage, in one run folder.

Rooms of this package: :mod:`~llmhni_local.pipeline.plan` (the stages in order, what each
reads and writes), :mod:`~llmhni_local.pipeline.settings` (the run's settings),
:mod:`~llmhni_local.pipeline.context` (one run: keys and records),
:mod:`~llmhni_local.pipeline.steps` and :mod:`~llmhni_local.pipeline.train_stage` (the stage
bodies), :mod:`~llmhni_local.pipeline.methods` (the method table),
:mod:`~llmhni_local.pipeline.train_store` (train runs kept by key),
:mod:`~llmhni_local.pipeline.manifest` and :mod:`~llmhni_local.pipeline.runner` (the loop).

Stages, in order (``python cli.py run --config configs/ml100k.toml``)::

    data -> profiles -> embed -> align -> rec_pre -> candidates -> tune -> rate
         -> verdicts -> train -> report

``tune`` does nothing unless ``tune.kind`` asks it to fit a probe on simulated audit labels
(:class:`~llmhni_local.engine.settings.TuneSettings`); the rate stage then rates with that probe.

Each stage records in ``RUN/stages/<stage>.json`` a key: the hash of the settings it reads and
of the keys of the stages it reads from. A stage whose key is unchanged and whose outputs exist
is reused without doing any work; ``--from STAGE`` runs that stage and every later one again.
``RUN/manifest.json`` records models (with hashes), prompt hashes, settings, versions and seeds.

Run folder layout::

    RUN/profiles/  RUN/embeddings/  RUN/align/z.npz  RUN/rec_pre/ (a train run)
    RUN/candidates.parquet  RUN/tune/ (tune.kind = "probe")  RUN/judgments.sqlite  RUN/rating.json
    RUN/verdicts.parquet  RUN/verdicts.json  RUN/train/<method>/seed<k>/ (train runs)
    RUN/train_store/<key>/ (every finished train run, by its key: a setting changed back is free)
    RUN/results.json  RUN/report.md  RUN/plots/*.png
"""

from llmhni_local.pipeline.context import Run
from llmhni_local.pipeline.methods import METHOD_TABLE, METHODS, Method, train_method
from llmhni_local.pipeline.plan import PLAN, STAGES, Stage
from llmhni_local.pipeline.runner import run_pipeline
from llmhni_local.pipeline.settings import (
                                            OTHER_TABLES,
                                            PipelineSettings,
                                            RunConfig,
                                            load_run_config,
)
from llmhni_local.pipeline.train_stage import rater_info

__all__ = ["METHODS", "METHOD_TABLE", "Method", "OTHER_TABLES", "PLAN", "PipelineSettings", "Run",
           "RunConfig", "STAGES", "Stage", "load_run_config", "rater_info", "run_pipeline",
           "train_method"]
