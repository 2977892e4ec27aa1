"""Stage ``tune``: with ``tune.kind = "probe"``, a probe fitted on simulated audit labels of
training pairs that are not candidates; the rate stage then rates with it. With ``"none"``
(the default) it does nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from llmhni_local.audit.simulated_audits import RATING_RULE, simulate_sample
from llmhni_local.core.errors import ConfigError
from llmhni_local.core.io import write_json
from llmhni_local.data.dataset import Interactions
from llmhni_local.stages.context import Run
from llmhni_local.stages.plan import TUNE_PROBE_DIR, TUNE_SUMMARY
from llmhni_local.text.profiles import load_profiles
from llmhni_local.tune.probe import ProbeSettings, fit_probe
from llmhni_local.tune.settings import TuneSettings


def tune_run(run_dir: str | Path, data: "Interactions", settings: "TuneSettings", *,
             base: str, max_liked: int, log: Callable[[str], None] = print,
             progress: bool = False) -> dict[str, Any]:
    """``tune.kind = "probe"``: fit a probe on ``rater.model`` (``base``) into
    ``RUN/tune/probe/`` from ``settings.labels`` simulated audit labels of training pairs that
    are not candidates of the run (``audit simulate --pool train``), and describe it in
    ``RUN/tune/tune.json``; returns that summary."""
    if settings.kind != "probe":
        raise ConfigError(f"tune.kind {settings.kind!r}: tune_run fits probes only")
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    frame, info = simulate_sample(run_dir, settings.labels, pool="train", seed=settings.seed,
                                  data=data)
    labels = frame[["user", "item", "label"]].assign(simulated=True)
    source = {"simulated": True, "rule": RATING_RULE, "pool": "train", "seed": settings.seed,
              "rows": int(len(labels))}
    card = fit_probe(load_profiles(run_dir), labels, run_dir / TUNE_PROBE_DIR,
                     ProbeSettings(base=base), max_liked=max_liked, label_sources=[source],
                     run_dir=run_dir, force=True, log=log, progress=progress)
    summary = {
        "kind": "probe", "simulated": True, "labels": int(card["labels"]["n"]),
        "counts": card["labels"]["counts"], "users": int(card["labels"]["users"]),
        "seed": settings.seed, "rule": RATING_RULE,
        "pool": "training pairs that are not candidates",
        "excluded_candidates": int(info.get("excluded_candidates", 0)),
        "available": int(info.get("available", 0)),
        "unrated_excluded": int(info.get("unrated_excluded", 0)), "probe": TUNE_PROBE_DIR,
        "base_model": card["base_model"]["name"],
        "cv": {view: dict(fig) for view, fig in card["cv"]["per_view"].items()},
        "probe_seconds": card["timing"]["wall_seconds"],
        "seconds": time.perf_counter() - t0}
    write_json(run_dir / TUNE_SUMMARY, summary)
    return summary


def run_stage(run: Run) -> dict:
    if run.cfg.tune.kind == "none":
        return {"kind": "none"}

    run.log(f"[tune] {run.cfg.tune.kind} on {run.cfg.tune.labels} simulated audit labels "
            "(training pairs that are not candidates)")
    return tune_run(run.dir, run.data, run.cfg.tune, base=run.cfg.rater.model,
                    max_liked=run.cfg.rate.max_liked, log=run.log, progress=run.progress)
