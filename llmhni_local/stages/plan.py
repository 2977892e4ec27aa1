"""The stages of a run, in order: the settings each reads, the stages it reads from and the
files it writes (relative to the run folder).

A stage's key (:func:`llmhni_local.stages.key.stage_key`) is made from what this plan says it
reads; a stage whose key is unchanged and whose outputs exist is reused without work. Each
stage's body is the module of its name in this room (``stages/rate.py`` for ``rate``); the
runner (:mod:`llmhni_local.pipeline.runner`) walks the plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmhni_local.core.config import TrainSettings

if TYPE_CHECKING:
    from llmhni_local.stages.settings import RunConfig


#: Files (or folders) each stage writes, relative to the run folder; a missing one re-runs it.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "data": (),
    "profiles": ("profiles/manifest.json", "profiles/users.jsonl", "profiles/items.jsonl"),
    "embed": ("embeddings/meta.json", "embeddings/users.npy", "embeddings/items.npy"),
    "align": ("align/aligned.npz", "align/raw.npz"),
    "rec_pre": ("rec_pre/model.pt", "rec_pre/metrics.json"),
    "candidates": ("candidates.parquet", "candidates.json"),
    "tune": (),  # tune.kind = "none" writes nothing; see TUNE_OUTPUTS
    "rate": ("judgments.sqlite", "rating.json"),
    "verdicts": ("verdicts.parquet",),
    "train": ("results.json",),
    "report": ("report.md",),
}

#: With the simulated rater (``pipeline.rater = "simulated"``) or imported verdicts
#: (``verdicts.file``) the rate stage stores nothing.
SIMULATED_OUTPUTS: dict[str, tuple[str, ...]] = {"rate": ()}

#: Where ``tune.kind = "probe"`` puts the probe folder and its summary, relative to the run.
TUNE_PROBE_DIR = "tune/probe"
TUNE_SUMMARY = "tune/tune.json"

#: What the ``tune`` stage writes per ``tune.kind``.
TUNE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "none": (), "probe": (TUNE_SUMMARY, f"{TUNE_PROBE_DIR}/card.json",
                          f"{TUNE_PROBE_DIR}/probe.safetensors")}


#: ``[train]`` fields that only a baseline's own loss reads; Rec_pre is BPR, so they stay out of
#: its key (a grid over T-CE's or SGL's knob does not retrain it).
LOSS_KNOBS = ("loss", "tce_max_drop", "tce_warmup", "rce_alpha", "ssl_weight", "ssl_temp",
              "ssl_warmup", "edge_drop")
REC_PRE_TRAIN: tuple[str, ...] = tuple(f"train.{f.name}" for f in dataclasses.fields(TrainSettings)
                                       if f.name not in LOSS_KNOBS)


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
    Stage("rec_pre", ("model", *REC_PRE_TRAIN, "eval"), ("data",), OUTPUTS["rec_pre"]),
    Stage("candidates", ("candidates",), ("rec_pre",), OUTPUTS["candidates"]),
    # with tune.kind = "none" it reads only [tune], and rate does not read it (reads())
    Stage("tune", ("tune", "rater.model", "rate.max_liked"), ("candidates", "profiles"),
          TUNE_OUTPUTS["probe"]),
    Stage("rate", ("rater", "rate", "pipeline.rater", "pipeline.simulated_error",
                   "pipeline.simulated_auc"),
          ("candidates", "profiles"), OUTPUTS["rate"]),
    Stage("verdicts", ("verdicts",), ("rate",), OUTPUTS["verdicts"]),
    Stage("train", ("model", "train", "eval", "llmhni", "baselines", "pipeline.methods",
                    "pipeline.seeds"),
          ("verdicts", "align", "rec_pre"), OUTPUTS["train"]),
    Stage("report", (), ("train",), OUTPUTS["report"]),
)
STAGES: tuple[str, ...] = tuple(s.name for s in PLAN)
_BY_NAME = {s.name: s for s in PLAN}


#: What the rate and verdicts stages read when ``verdicts.file`` imports the verdicts: the
#: rate stage does nothing, and the verdicts depend on the file (its sha256 is the key's
#: content) and on the data that gives each pair its kind, not on candidates or ratings.
IMPORTED_READS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "rate": (("verdicts.file",), ()),
    "verdicts": (("verdicts.source", "verdicts.keep_held_out", "verdicts.skip_unknown"),
                 ("data",)),
}


#: Stages a run on data without item text skips (docs/DESIGN.md, "Data without text"): they
#: make or read text. A skipped stage stores nothing, and its key is made with
#: :data:`NO_TEXT_CONTENT` as its content, so a run on data with text never reuses its record.
TEXT_STAGES: tuple[str, ...] = ("profiles", "embed", "align")
NO_TEXT_CONTENT = "skipped: no item text"


def text_free_skips(cfg: "RunConfig") -> tuple[str, ...]:
    """The stages a run on data without item text skips: :data:`TEXT_STAGES`, and the rate and
    verdicts stages where an LLM would rate here (its prompts are text, and without judgments
    there is nothing to decide), not where the verdicts or judgments were made elsewhere
    (``verdicts.file``, ``rate.file``) or the simulated rater draws them."""
    rates_here = (cfg.pipeline.rater == "llm" and cfg.verdicts.file is None
                  and cfg.rate.file is None)
    return TEXT_STAGES + (("rate", "verdicts") if rates_here else ())


#: What the rate stage reads when ``rate.file`` imports the judgments: the file (its sha256
#: is the key's content), the source it is stored under and the data that turns raw ids into
#: indices and gives each pair its kind; not candidates or profiles (no prompt is built). The
#: verdicts stage reads as it always does, from the rate stage.
IMPORTED_JUDGMENTS_READS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "rate": (("rate.source", "rate.skip_unknown"), ("data",)),
}


def reads(cfg: "RunConfig", stage: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(settings, upstream)`` of ``stage`` under ``cfg``: an untuned run's keys are those of
    a run without a tune stage, and a tuned run's rate key holds the tune key (a new probe
    re-rates); with ``verdicts.file``, :data:`IMPORTED_READS`; with ``rate.file``,
    :data:`IMPORTED_JUDGMENTS_READS`."""
    s = _BY_NAME[stage]
    if cfg.verdicts.file is not None and stage in IMPORTED_READS:
        return IMPORTED_READS[stage]
    if cfg.rate.file is not None and stage in IMPORTED_JUDGMENTS_READS:
        return IMPORTED_JUDGMENTS_READS[stage]
    if stage == "tune" and cfg.tune.kind == "none":
        return ("tune",), ()
    if stage == "rate" and cfg.tune.kind != "none":
        return s.settings, (*s.upstream, "tune")
    return s.settings, s.upstream


def missing_outputs(run_dir: str | Path, stage: str, *, simulated: bool = False,
                    tune: str = "none", imported: bool = False) -> list[str]:
    """The declared outputs of ``stage`` that ``run_dir`` lacks (empty: all there); ``tune``
    is ``tune.kind``, ``imported`` whether ``verdicts.file`` is set."""
    declared = (SIMULATED_OUTPUTS.get(stage, OUTPUTS[stage]) if simulated or imported
                else OUTPUTS[stage])
    if stage == "tune":
        declared = TUNE_OUTPUTS[tune]
    return [o for o in declared if not (Path(run_dir) / o).exists()]
