"""The stages of a run, in order, with the settings each reads, the stages it reads from and
the files it writes (relative to the run folder).

A stage's key is the hash of the settings it reads and of the keys of the stages it reads
from; a stage whose key is unchanged and whose outputs exist is reused without work. The
runner (:mod:`llmhni_local.pipeline.runner`) walks this list; each stage's body is in
:mod:`llmhni_local.pipeline.steps` (``train``: :mod:`llmhni_local.pipeline.train_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmhni_local.stages import OUTPUTS, TUNE_OUTPUTS

if TYPE_CHECKING:
    from llmhni_local.pipeline.settings import RunConfig


@dataclass(frozen=True)
class Stage:
    """One stage: ``settings`` are dotted paths into the run's settings, ``upstream`` the
    stages whose keys enter its key, ``writes`` its declared outputs."""

    name: str
    settings: tuple[str, ...]
    upstream: tuple[str, ...]
    writes: tuple[str, ...]


PLAN: tuple[Stage, ...] = (
    Stage("data", ("data",), (), OUTPUTS["data"]),
    Stage("profiles", ("profiles",), ("data",), OUTPUTS["profiles"]),
    # not [embed]: the engine settings leave the vectors unchanged
    Stage("embed", ("embedder",), ("profiles",), OUTPUTS["embed"]),
    Stage("align", ("llmhni.align", "train.seed"), ("embed",), OUTPUTS["align"]),
    Stage("rec_pre", ("model", "train", "eval"), ("data",), OUTPUTS["rec_pre"]),
    Stage("candidates", ("candidates",), ("rec_pre",), OUTPUTS["candidates"]),
    # with tune.kind = "none" it reads only [tune], and rate does not read it (reads())
    Stage("tune", ("tune", "rater.model", "rate.max_liked"), ("candidates", "profiles"),
          TUNE_OUTPUTS["probe"]),
    Stage("rate", ("rater", "rate", "pipeline.rater", "pipeline.simulated_error",
                   "pipeline.simulated_auc"),
          ("candidates", "profiles"), OUTPUTS["rate"]),
    Stage("verdicts", ("verdicts",), ("rate",), OUTPUTS["verdicts"]),
    Stage("train", ("model", "train", "eval", "llmhni", "pipeline.methods", "pipeline.seeds"),
          ("verdicts", "align", "rec_pre"), OUTPUTS["train"]),
    Stage("report", (), ("train",), OUTPUTS["report"]),
)
STAGES: tuple[str, ...] = tuple(s.name for s in PLAN)
_BY_NAME = {s.name: s for s in PLAN}


def reads(cfg: "RunConfig", stage: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(settings, upstream)`` of ``stage`` under ``cfg``: an untuned run's keys are those of
    a run without a tune stage, a tuned run's rate key holds the tune key (a new probe
    re-rates), and ``pipeline.simulated_auc`` enters the rate key only when it is set."""
    s = _BY_NAME[stage]
    if stage == "tune" and cfg.tune.kind == "none":
        return ("tune",), ()
    settings = s.settings
    if stage == "rate" and cfg.pipeline.simulated_auc is None:
        # the error-rate form keeps the rate key it had before the AUC form existed, so
        # finished run folders are not re-rated and their LLMHNI runs not retrained
        settings = tuple(x for x in settings if x != "pipeline.simulated_auc")
    if stage == "rate" and cfg.tune.kind != "none":
        return settings, (*s.upstream, "tune")
    return settings, s.upstream
