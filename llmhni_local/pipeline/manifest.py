"""``RUN/manifest.json``: models with their hashes, prompt hashes, settings, versions, seeds."""

from __future__ import annotations

from typing import Callable

from llmhni_local.core.config import to_dict
from llmhni_local.core.device import device_record, resolve_device
from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
from llmhni_local.stages.context import Run
from llmhni_local.stages.plan import STAGES, TUNE_PROBE_DIR, TUNE_SUMMARY
from llmhni_local.weights.registry import model_hash


def run_manifest(run: Run, build_manifest: Callable[..., dict]) -> dict:
    """The manifest of a finished run (``build_manifest`` adds versions, commit, machine)."""

    reader = ("likelihood",) if run.cfg.rate.mode == "likelihood" else ()
    templates = load_templates(("user_profile", "item_profile", *VIEW_TEMPLATES.values(),
                                *reader))
    models = {"embedder": {"name": run.cfg.embedder.model, "id": run.content.get("embed")}}
    if run.cfg.verdicts.file is not None:  # verdicts made elsewhere: no rater ran here
        models["rater"] = {"imported": True, "file": run.cfg.verdicts.file,
                           "source": run.cfg.verdicts.source,
                           "sha256": run.content.get("verdicts", "").removeprefix("imported:")}
    elif run.cfg.rate.file is not None:  # judgments made elsewhere: no rater ran here either
        models["rater"] = {"imported_judgments": True, "file": run.cfg.rate.file,
                           "source": run.cfg.rate.source,
                           "sha256": run.content.get("rate", "").removeprefix("imported:")}
    elif run.cfg.pipeline.rater == "llm":
        models["rater"] = {"name": run.cfg.rater.model, "adapter": run.rater.adapter,
                           "id": run.content.get("rate")}
        if run.cfg.tune.kind == "probe":
            folder = run.dir / TUNE_PROBE_DIR
            models["rater"]["tuned"] = {"kind": "probe", "folder": str(folder),
                                        "sha256": model_hash(folder), "simulated_labels": True,
                                        "summary": TUNE_SUMMARY}
    else:
        models["rater"] = {"simulated": True, "error_rate": run.cfg.pipeline.simulated_error}
    return build_manifest(
        settings=to_dict(run.cfg), data_sources=run.data.sources,
        seeds={"train": list(run.cfg.pipeline.seeds), "data": run.cfg.data.seed,
               "candidates": run.cfg.candidates.seed},
        models=models, prompts={n: t.hash for n, t in templates.items()},
        extra={"stages": {s: {"key": run.keys.get(s), "ran": run.ran.get(s)} for s in STAGES},
               "device": device_record(resolve_device(run.cfg.train.device)),
               "rate_mode": run.cfg.rate.mode})
