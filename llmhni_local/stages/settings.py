"""The run's settings: one table per stage, read from TOML with overrides.

Defaults < TOML file < overrides (:func:`llmhni_local.core.config.load_config`); every table is a
frozen dataclass that checks its own fields, and the run as a whole checks what spans tables.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmhni_local.baselines.settings import BaselineSettings
from llmhni_local.core.config import (
    ConfigError,
    DataSettings,
    EvalSettings,
    ModelSettings,
    TrainConfig,
    TrainSettings,
    build,
    load_config,
    merge,
)
from llmhni_local.engine.settings import (
    EmbedderSettings,
    EmbedSettings,
    RaterSettings,
)
from llmhni_local.judgments.plan import RateSettings
from llmhni_local.llmhni.candidates import CandidateSettings
from llmhni_local.llmhni.settings import LLMHNISettings
from llmhni_local.stages.methods import METHODS
from llmhni_local.text.profiles import ProfileSettings
from llmhni_local.tune.settings import TuneSettings
from llmhni_local.verdicts.decide import check_reader
from llmhni_local.verdicts.rules import VerdictSettings


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline runs and where.

    Args:
        out: the run folder. (default: ``"runs/ml100k"``)
        methods: methods trained in the ``train`` stage; ``bpr`` is the pretrained recommender
            itself (Rec_pre is LightGCN/NGCF with BPR, early-stopped on validation), so it costs
            nothing extra for the first seed. One of :data:`METHODS` each.
            (default: ``("bpr", "tce", "sgl", "llmhni")``)
        seeds: training seeds; results are reported as mean ± std over them. (default: ``(0,)``)
        rater: ``llm`` (the configured local model) or ``simulated`` (reads the ground-truth
            noise flags and errs at ``simulated_error``, or is graded by ``simulated_auc``; for
            studies only, marked as simulated everywhere). (default: ``"llm"``)
        simulated_error: error rate of the simulated rater. (default: ``0.0``)
        simulated_auc: grade the simulated rater by AUC instead: it draws a binormal score per
            observed candidate whose AUC between truly clean and truly noisy pairs is this
            value, in [0.5, 1], and the ``[verdicts]`` threshold rule (a share, or taus from
            audits) turns the scores into verdicts (:mod:`llmhni_local.verdicts.simulated`).
            ``None``: the error-rate form. (default: ``None``)
        jobs: (method, seed) trainings the ``train`` stage runs at once, each in a process of
            its own with ``train.threads`` threads (0: the CPU's cores shared out among the
            jobs). Only the wall time changes, so it is in no key. On 2 cores two one-thread
            trainings ran at 2.2 s/epoch each against 2.1 s/epoch for one on two threads
            (docs/DESIGN.md, "Parallel trainings"). (default: ``1``)
    """

    out: str = "runs/ml100k"
    methods: tuple[str, ...] = ("bpr", "tce", "sgl", "llmhni")
    seeds: tuple[int, ...] = (0,)
    rater: Literal["llm", "simulated"] = "llm"
    simulated_error: float = 0.0
    simulated_auc: float | None = None
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"pipeline.jobs must be >= 1, got {self.jobs}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"pipeline.methods: unknown method {bad[0]!r} (known: {', '.join(METHODS)})")
        if not self.methods:
            raise ConfigError("pipeline.methods must not be empty")
        if not self.seeds:
            raise ConfigError("pipeline.seeds must not be empty (give at least one seed)")
        if not 0.0 <= self.simulated_error <= 1.0:
            raise ConfigError(f"pipeline.simulated_error must be in [0, 1], got {self.simulated_error}")
        if self.simulated_auc is not None:
            if not 0.5 <= self.simulated_auc <= 1.0:
                raise ConfigError(f"pipeline.simulated_auc must be in [0.5, 1], got "
                                  f"{self.simulated_auc}")
            if self.simulated_error != 0.0:
                raise ConfigError(f"pipeline.simulated_auc ({self.simulated_auc:g}) and "
                                  f"pipeline.simulated_error ({self.simulated_error:g}) are two "
                                  "forms of the simulated rater; set one")
            if self.rater != "simulated":
                raise ConfigError(f"pipeline.simulated_auc grades the simulated rater; "
                                  f"pipeline.rater is {self.rater!r} (set it to 'simulated')")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a pipeline run, one table per stage (see each class for defaults)."""

    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    profiles: ProfileSettings = field(default_factory=ProfileSettings)
    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    candidates: CandidateSettings = field(default_factory=CandidateSettings)
    rater: RaterSettings = field(default_factory=RaterSettings)
    tune: TuneSettings = field(default_factory=TuneSettings)
    rate: RateSettings = field(default_factory=RateSettings)
    llmhni: LLMHNISettings = field(default_factory=LLMHNISettings)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    verdicts: VerdictSettings = field(default_factory=VerdictSettings)

    def __post_init__(self) -> None:
        if self.pipeline.rater == "llm" and self.rate.file is None:  # else the file says
            check_reader(self.verdicts, self.rate.mode)  # (pipeline/runner.py: check_imported)
        if self.tune.kind != "none" and self.rate.mode == "likelihood":
            raise ConfigError("tune.kind = 'probe' fits a head on the judge's answer states; "
                              "rate.mode = 'likelihood' reads no answer (set tune.kind = "
                              "'none')")
        if self.tune.kind == "none":
            return
        if self.rater.adapter:
            raise ConfigError(f"tune.kind = {self.tune.kind!r} rates with the probe it fits; "
                              f"rater.adapter ({self.rater.adapter}) must then be unset")
        if self.pipeline.rater == "simulated":
            raise ConfigError(f"tune.kind = {self.tune.kind!r} tunes the LLM rater; "
                              "pipeline.rater = 'simulated' uses none (set tune.kind = 'none')")

    def train_config(self, **train_changes) -> TrainConfig:
        return TrainConfig(data=self.data, model=self.model,
                           train=dataclasses.replace(self.train, **train_changes), eval=self.eval)


#: Tables of a shared settings file that belong to other commands (``finetune-rater``, LoRA or
#: probe).
OTHER_TABLES: tuple[str, ...] = ("finetune", "probe")


def load_run_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults < TOML file < overrides (:func:`llmhni_local.core.config.load_config`)."""
    return load_config(RunConfig, path, overrides, ignore=OTHER_TABLES)


#: What may change when a method trains from a finished run folder (``train --run``).
RUN_OVERRIDABLE = ("model.", "train.", "eval.", "llmhni.", "baselines.")


def settings_of_run(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The settings a finished pipeline run folder was made with (``RUN/manifest.json``), with
    ``overrides`` (dotted) on top and ``pipeline.out`` set to ``run_dir``."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not a pipeline run folder (no manifest.json; run "
                          "`llmhni run` first)")
    try:
        manifest = json.loads(path.read_text())
        values, stages = manifest["settings"], manifest["stages"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: no settings in this manifest") from None
    for stage, rec in stages.items():
        # a stage re-run after the manifest was written: a pipeline stopped part-way, whose
        # files no longer match these settings
        done = Path(run_dir) / "stages" / f"{stage}.json"
        if done.is_file() and json.loads(done.read_text()).get("key") != rec.get("key"):
            raise ConfigError(f"{run_dir}: stage {stage} was re-run after manifest.json was "
                              "written (a run stopped part-way); finish it with `llmhni run`")
    bad = [k for k in (overrides or {}) if not k.startswith(RUN_OVERRIDABLE)
           or k.startswith("llmhni.align.")]
    if bad:
        raise ConfigError(f"{bad[0]}: a run folder's data, profiles, alignment and verdicts are "
                          "fixed; only model, train, eval, llmhni and baselines settings change")
    values = merge(values, {**(overrides or {}), "pipeline.out": str(run_dir)})
    try:
        return build(RunConfig, values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
