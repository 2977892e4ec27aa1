"""Running the stages in order, each reused when its key and outputs are unchanged."""

from __future__ import annotations

import time
from typing import Callable

from llmhni_local.core.config import ConfigError
from llmhni_local.core.io import write_json
from llmhni_local.pipeline.context import Run
from llmhni_local.pipeline.manifest import run_manifest
from llmhni_local.pipeline.plan import STAGES
from llmhni_local.pipeline.settings import RunConfig
from llmhni_local.pipeline.steps import (
    embedder_id,
    rater_id_of,
    stage_align,
    stage_candidates,
    stage_data,
    stage_embed,
    stage_profiles,
    stage_rate,
    stage_rec_pre,
    stage_report,
    stage_tune,
    stage_verdicts,
)
from llmhni_local.pipeline.train_stage import stage_train
from llmhni_local.stages import missing_outputs

RUNNERS: dict[str, Callable[[Run], dict]] = {
    "data": stage_data, "profiles": stage_profiles, "embed": stage_embed,
    "align": stage_align, "rec_pre": stage_rec_pre, "candidates": stage_candidates,
    "tune": stage_tune, "rate": stage_rate, "verdicts": stage_verdicts, "train": stage_train,
    "report": stage_report,
}


def model_keys(run: Run) -> None:
    """Model content hashes enter the keys of the stages that use the models."""
    needs_llm = run.cfg.pipeline.rater == "llm"
    run.extra_keys["embed"] = embedder_id(run)
    if needs_llm and run.cfg.tune.kind == "none":  # a tuned rater's id: _tuned_rater_key
        run.extra_keys["rate"] = ":".join(rater_id_of(run))
    if run.cfg.tune.kind != "none":
        from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates

        # the probe reads the base model's states on the rating prompts
        hashes = [t.hash for t in load_templates(tuple(VIEW_TEMPLATES.values())).values()]
        run.extra_keys["tune"] = ":".join([rater_id_of(run)[0], *hashes])
    if run.cfg.profiles.summarize:
        run.extra_keys["summarizer"] = ":summarized-by:" + ":".join(rater_id_of(run))


def run_pipeline(cfg: RunConfig, *, start: str | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> Run:
    """Run every stage in order, reusing those whose key and outputs are unchanged.

    Args:
        cfg: the run's settings.
        start: run this stage and every later one even if unchanged (``--from``).
        progress: progress bars.
        log: where one-line stage messages go.
    """
    from llmhni_local.core.manifest import build_manifest

    if start is not None and start not in STAGES:
        raise ConfigError(f"--from: unknown stage {start!r} (stages: {', '.join(STAGES)})")
    run = Run(cfg, progress=progress, log=log)
    run.dir.mkdir(parents=True, exist_ok=True)
    check_inputs_early(run)
    model_keys(run)
    forced = False
    for stage in STAGES:
        forced = forced or stage == start
        if stage == "data":
            stage_data(run)  # cheap, and sets the data hash the later keys read
        if stage == "rate" and run.cfg.tune.kind != "none":
            # the tuned rater's id holds the probe folder's hash, known once tune is done
            run.extra_keys["rate"] = ":".join(rater_id_of(run, run.rater))
        key = run.key(stage)
        run.keys[stage] = key
        rec = run.record(stage)
        missing = missing_outputs(run.dir, stage, simulated=run.cfg.pipeline.rater == "simulated",
                                  tune=run.cfg.tune.kind)
        if not forced and rec is not None and rec.get("key") == key and not missing:
            run.ran[stage] = False
            log(f"[{stage}] unchanged, reused")
            continue
        # Outputs lost since the last run: what later stages read from them may differ too.
        forced = forced or (rec is not None and bool(missing))
        t0 = time.perf_counter()
        log(f"[{stage}] running" + (f" ({', '.join(missing)} missing)"
                                     if rec is not None and missing else ""))
        summary = RUNNERS[stage](run)
        seconds = time.perf_counter() - t0
        run.ran[stage] = True
        write_json(run.record_path(stage), {"stage": stage, "key": key, "seconds": seconds,
                                            "summary": summary})
        log(f"[{stage}] done in {seconds:.1f} s")
    write_json(run.dir / "manifest.json", run_manifest(run, build_manifest))
    return run


def check_inputs_early(run: Run) -> None:
    """Everything that can be checked before an engine starts or a model trains."""
    from llmhni_local.core.device import resolve_device
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.stages import check_can_summarize
    from llmhni_local.weights.registry import resolve_checked

    resolve_device(run.cfg.train.device)  # a GPU this machine lacks: before any stage runs
    reader = ("likelihood",) if run.cfg.rate.mode == "likelihood" else ()
    load_templates(("user_profile", "item_profile", *VIEW_TEMPLATES.values(), *reader))
    check_can_summarize(run.cfg.profiles, run.cfg.rater)
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
    resolve_checked(run.cfg.embedder.model, ("weights", "config", "tokenizer"))
    if run.cfg.pipeline.rater == "llm" or run.cfg.profiles.summarize:
        spec = resolve_checked(run.cfg.rater.model, ("weights", "config", "tokenizer"))
        if run.cfg.pipeline.rater == "llm" and run.cfg.rate.mode == "judge":
            from llmhni_local.rating.run import check_judge

            check_judge(spec.path, run.cfg.rater.model)  # before Rec_pre trains, not after
