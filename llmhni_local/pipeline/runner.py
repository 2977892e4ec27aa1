"""Running the stages in order, each reused when its key and outputs are unchanged.

The plan (:mod:`llmhni_local.stages.plan`) says what each stage reads and writes; its body is
the module of its name in :mod:`llmhni_local.stages`, the same function the single-stage
commands call.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from llmhni_local.core.config import ConfigError
from llmhni_local.core.device import resolve_device
from llmhni_local.core.io import write_json
from llmhni_local.core.manifest import build_manifest
from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
from llmhni_local.judgments.imported import check_judgment_rows
from llmhni_local.judgments.run import check_judge
from llmhni_local.llmhni.text_free import has_item_text, without_text, without_text_notes
from llmhni_local.pipeline.manifest import run_manifest
from llmhni_local.stages import (
    align,
    candidates,
    data,
    embed,
    profiles,
    rate,
    rec_pre,
    report,
    train,
    tune,
    verdicts,
)
from llmhni_local.stages.context import Run
from llmhni_local.stages.methods import METHOD_TABLE, check_methods
from llmhni_local.stages.plan import NO_TEXT_CONTENT, STAGES, missing_outputs, text_free_skips
from llmhni_local.stages.settings import RunConfig
from llmhni_local.text.embed import profile_prompts
from llmhni_local.verdicts.decide import COUNTS_FILE, VERDICTS_FILE, check_imported_rule
from llmhni_local.verdicts.imported import check_rows, imported_record, read_rows
from llmhni_local.weights.registry import resolve_checked

#: The body of each stage of the plan.
BODIES: dict[str, Callable[[Run], dict]] = {
    "data": data.run_stage, "profiles": profiles.run_stage, "embed": embed.run_stage,
    "align": align.run_stage, "rec_pre": rec_pre.run_stage, "candidates": candidates.run_stage,
    "tune": tune.run_stage, "rate": rate.run_stage, "verdicts": verdicts.run_stage,
    "train": train.run_stage, "report": report.run_stage,
}


def run_pipeline(cfg: RunConfig, *, start: str | None = None, until: str | None = None,
                 progress: bool = True, log: Callable[[str], None] = print) -> Run:
    """Run every stage in order, reusing those whose key and outputs are unchanged.

    Args:
        cfg: the run's settings.
        start: run this stage and every later one even if unchanged (``--from``).
        until: stop after this stage (``--until``): a folder prepared for ``verdicts import``
            or another command. The later stages do not run, and ``manifest.json`` names only
            the stages that did, with ``until`` saying where the run stopped.
        progress: progress bars.
        log: where one-line stage messages go.
    """
    for flag, stage in (("--from", start), ("--until", until)):
        if stage is not None and stage not in STAGES:
            raise ConfigError(f"{flag}: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    if start is not None and until is not None and STAGES.index(start) > STAGES.index(until):
        raise ConfigError(f"--from {start} comes after --until {until}: no stage would run")
    stages = STAGES[:STAGES.index(until) + 1] if until is not None else STAGES
    run = Run(cfg, progress=progress, log=log)
    run.dir.mkdir(parents=True, exist_ok=True)
    check_inputs_early(run)
    skipped = text_free_stages(run, stages)
    forced = False
    for stage in stages:
        forced = forced or stage == start
        # keyed only now: a tuned rater's id holds the tune stage's probe; a stage skipped for
        # want of text is keyed apart, so a run on data with text never takes its record
        key = run.key(stage, NO_TEXT_CONTENT if stage in skipped else None)
        run.keys[stage] = key
        rec = run.record(stage)
        missing = [] if stage in skipped else missing_outputs(
            run.dir, stage, simulated=run.cfg.pipeline.rater == "simulated",
            tune=run.cfg.tune.kind, imported=run.cfg.verdicts.file is not None)
        if stage == "train" and not missing:  # its folders, one per (method, seed), by key
            missing = train.stale(run)
        if stage == "verdicts" and not missing:  # replaced since by `verdicts import|decide`
            missing = verdicts.stale(run)
        if not forced and rec is not None and rec.get("key") == key and not missing:
            run.ran[stage] = False
            log(f"[{stage}] " + ("skipped (no item text)" if stage in skipped
                                 else "unchanged, reused"))
            continue
        # Outputs lost since the last run: what later stages read from them may differ too.
        forced = forced or (rec is not None and bool(missing))
        t0 = time.perf_counter()
        if stage in skipped:
            log(f"[{stage}] skipped (no item text)")
            summary = {"skipped": "no item text"}
        else:
            log(f"[{stage}] running" + (f" ({', '.join(missing)} missing)"
                                         if rec is not None and missing else ""))
            summary = BODIES[stage](run)
        seconds = time.perf_counter() - t0
        run.ran[stage] = True
        write_json(run.record_path(stage), {"stage": stage, "key": key, "seconds": seconds,
                                            "summary": summary})
        if stage not in skipped:
            log(f"[{stage}] done in {seconds:.1f} s")
    manifest = run_manifest(run, build_manifest)
    stopped = len(stages) < len(STAGES)
    if stopped:  # only the stages that ran are named: nothing claims the others did
        manifest["stages"] = {s: m for s, m in manifest["stages"].items() if s in stages}
        manifest["until"] = until
    write_json(run.dir / "manifest.json", manifest)
    if stopped:
        log(f"[run] stopped after {until} (--until); not run: {', '.join(STAGES[len(stages):])}")
    return run


def text_free_stages(run: Run, stages: tuple[str, ...]) -> tuple[str, ...]:
    """On data without item text (docs/DESIGN.md, "Data without text"): the stages of
    ``stages`` that are skipped (:func:`~llmhni_local.stages.plan.text_free_skips`); the run's
    ``[llmhni]`` without its text switches (so keys and manifest say what trains); one line
    through ``run.log`` saying so. Refused in one line when a stage still to run needs what
    only text gives. ``()`` on data with item text."""
    if has_item_text(run.data):
        return ()
    cfg, name = run.cfg, run.data.name
    skipped = tuple(s for s in text_free_skips(cfg) if s in stages)
    reading = [m for m in cfg.pipeline.methods if METHOD_TABLE[m].reads_verdicts]
    if "verdicts" in skipped and "train" in stages and reading:
        raise ConfigError(f"pipeline.methods has {reading[0]!r}, which reads verdicts, and "
                          f"{name} has no item text for the LLM rater to read: set "
                          "verdicts.file to verdicts made elsewhere (docs/IMPORTING.md), or "
                          "pipeline.rater = 'simulated' with data.synthetic_noise")
    if cfg.tune.kind != "none" and "tune" in stages:
        raise ConfigError(f"tune.kind = {cfg.tune.kind!r} tunes the rater on its prompts; "
                          f"{name} has no item text to write them from (set tune.kind = 'none')")
    run.cfg = dataclasses.replace(cfg, llmhni=without_text(cfg.llmhni))
    run.log(f"[run] {'. '.join(without_text_notes(run.data))}."
            + (f" Skipped stages: {', '.join(skipped)}" if skipped else ""))
    return skipped


def check_inputs_early(run: Run) -> None:
    """Everything that can be checked before an engine starts or a model trains."""
    resolve_device(run.cfg.train.device)  # a GPU this machine lacks: before any stage runs
    reader = ("likelihood",) if run.cfg.rate.mode == "likelihood" else ()
    load_templates(("user_profile", "item_profile", *VIEW_TEMPLATES.values(), *reader))
    profiles.check_can_summarize(run.cfg.profiles, run.cfg.rater)
    check_methods(run.cfg.pipeline.methods, run.data)
    needs_flags = [why for why, on in (
        ("pipeline.methods has 'oracle'", "oracle" in run.cfg.pipeline.methods),
        ("pipeline.rater = 'simulated'", run.cfg.pipeline.rater == "simulated")) if on]
    if needs_flags and run.data.train_noise is None:
        raise ConfigError(f"{needs_flags[0]} needs ground-truth noise flags; {run.data.name} has "
                          "none (set data.synthetic_noise)")
    if run.cfg.tune.kind != "none" and run.data.train_rating is None:
        raise ConfigError(f"tune.kind = {run.cfg.tune.kind!r} fits on simulated audit labels "
                          f"read off explicit ratings; {run.data.name} has none (set tune.kind "
                          "= 'none')")
    check_imported(run)
    rates = (run.cfg.pipeline.rater == "llm" and run.cfg.verdicts.file is None
             and run.cfg.rate.file is None)  # imported judgments need no rater model
    if has_item_text(run.data):  # without item text nothing is embedded (text_free.py)
        if run.cfg.embedder.backend != "openai":  # a server's model is the server's to check
            resolve_checked(run.cfg.embedder.model, ("weights", "config", "tokenizer"))
        profile_prompts(run.cfg.embedder)  # an unknown prompt name: before a summary is written
    if rates or run.cfg.profiles.summarize:
        spec = resolve_checked(run.cfg.rater.model, ("weights", "config", "tokenizer"))
        if rates and run.cfg.rate.mode == "judge":
            check_judge(spec.path, run.cfg.rater.model)  # before Rec_pre trains, not after


def check_imported(run: Run) -> None:
    """``verdicts.file``: no other source of verdicts is set, and every row of the file passes
    (before Rec_pre trains, not after). Without it: verdicts a ``verdicts import`` wrote into
    the folder are not decided over in silence. ``rate.file`` (judgments made elsewhere)
    likewise: no other source of verdicts or judgments, every row checked, and a verdict rule
    that reads what the file gives (labels or scores)."""
    r = run.cfg.rate
    if r.file is not None:
        for clash, on in ((f"verdicts.file ({run.cfg.verdicts.file}) brings verdicts",
                           run.cfg.verdicts.file is not None),
                          ("pipeline.rater = 'simulated' draws verdicts",
                           run.cfg.pipeline.rater == "simulated"),
                          (f"tune.kind = {run.cfg.tune.kind!r} tunes the LLM rater",
                           run.cfg.tune.kind != "none")):
            if on:
                raise ConfigError(f"rate.file ({r.file}) brings the judgments and {clash}; "
                                  "set one")
        checked = check_judgment_rows(r.file, read_rows(r.file), run.data.user_ids,
                                      run.data.item_ids, skip_unknown=r.skip_unknown)
        check_imported_rule(run.cfg.verdicts, {"imported": True, "source": r.source,
                                               "labels": checked["labels"],
                                               "scores": checked["scores"]}, r.file)
    s = run.cfg.verdicts
    if s.file is None:
        record = imported_record(run.dir)
        if record is not None:
            raise ConfigError(f"{run.dir / COUNTS_FILE}: its verdicts were imported from "
                              f"{record.get('file')} (source {record.get('source')!r}); set "
                              "verdicts.file and verdicts.source to keep them, or delete "
                              f"{VERDICTS_FILE} and {COUNTS_FILE} to decide them again")
        return
    if run.cfg.pipeline.rater == "simulated":
        raise ConfigError(f"verdicts.file ({s.file}) and pipeline.rater = 'simulated' are two "
                          "sources of verdicts; set one")
    if run.cfg.tune.kind != "none":
        raise ConfigError(f"tune.kind = {run.cfg.tune.kind!r} tunes the LLM rater; "
                          f"verdicts.file ({s.file}) brings the verdicts (set tune.kind = "
                          "'none')")
    check_rows(s.file, read_rows(s.file), run.data.user_ids, run.data.item_ids,
               skip_unknown=s.skip_unknown)
