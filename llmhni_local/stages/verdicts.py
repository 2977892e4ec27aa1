"""Stage ``verdicts`` (method stage 6): hard or noisy for each candidate pair, from the
judgments (and the run's audited labels), from the simulated rater, or imported from a file
made elsewhere (``verdicts.file``; docs/IMPORTING.md). With judgments imported by the rate
stage (``rate.file``) they are decided from that source, over the pairs it names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmhni_local.audit.records import load_audits
from llmhni_local.core.config import DataSettings
from llmhni_local.core.errors import UserError
from llmhni_local.core.io import sha256_file
from llmhni_local.data import load_data
from llmhni_local.data.dataset import Interactions
from llmhni_local.judgments.imported import import_judgments, read_source
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
from llmhni_local.stages.context import Run
from llmhni_local.stages.plan import OUTPUTS
from llmhni_local.stages.profiles import profiles_data
from llmhni_local.stages.settings import settings_of_run
from llmhni_local.verdicts.decide import COUNTS_FILE, VERDICTS_FILE, write_verdicts
from llmhni_local.verdicts.imported import import_verdicts, imported_record
from llmhni_local.verdicts.simulated import (
    simulate_auc_verdicts,
    simulate_verdicts,
    threshold_decider,
    write_simulated_verdicts,
)


def run_data(run_dir: str | Path) -> Interactions:
    """The data a run folder holds, for commands given only the folder: the data its profiles
    were built from (checked by fingerprint), else the data of its pipeline settings."""
    run_dir = Path(run_dir)
    if (run_dir / OUTPUTS["profiles"][0]).is_file():
        return profiles_data(run_dir, DataSettings())
    if (run_dir / "manifest.json").is_file():
        return load_data(settings_of_run(run_dir).data)
    raise UserError(f"{run_dir}: no {OUTPUTS['profiles'][0]} or manifest.json to say which data "
                    "the run holds (build its profiles, or run the pipeline, first)")


def import_into(run_dir: str | Path, path: str | Path, *, source: str,
                skip_unknown: bool = False, keep_held_out: bool = False) -> dict[str, Any]:
    """``verdicts import``: the file's verdicts on the run's data (:func:`run_data`) into
    ``RUN/verdicts.parquet`` and ``verdicts.json``
    (:func:`llmhni_local.verdicts.imported.import_verdicts`); returns the counts."""
    return import_verdicts(run_dir, path, source=source, data=run_data(run_dir),
                           skip_unknown=skip_unknown, keep_held_out=keep_held_out)


def judgments_current(run: Run) -> bool:
    """With ``rate.file``: whether the store's judgments of ``rate.source`` are that file's
    (a ``judgments import`` under the same name may have replaced them since)."""
    s = run.cfg.rate
    try:
        record = read_source(run.dir, s.source or "")
    except (UserError, ValueError):
        return False
    return record.get("sha256") == sha256_file(s.file)


def stale(run: Run) -> list[str]:
    """With ``verdicts.file``: ``[verdicts.parquet]`` when the folder's verdicts are not that
    file's (a ``verdicts import`` or ``verdicts decide`` replaced them since), so the stage is
    not reused; with ``rate.file``, when they were not decided from that file's judgments
    (another source, or the source imported again from another file); else ``[]``."""
    if run.cfg.rate.file is not None:
        decided = (_read_counts(run.dir).get("judgments") or {})
        same = (decided.get("source") == run.cfg.rate.source and judgments_current(run)
                and decided.get("sha256") == sha256_file(run.cfg.rate.file))
        return [] if same else [VERDICTS_FILE]
    if run.cfg.verdicts.file is None:
        return []
    record = imported_record(run.dir)
    same = record is not None and record.get("sha256") == sha256_file(run.cfg.verdicts.file)
    return [] if same else [VERDICTS_FILE]


def run_stage(run: Run) -> dict:
    """Verdicts from the judgments by the ``[verdicts]`` rule, drawn by the simulated rater
    (``pipeline.rater = "simulated"``), or imported from ``verdicts.file``."""
    s = run.cfg.verdicts
    if s.file is not None:
        return import_verdicts(run.dir, s.file, source=s.source or "", data=run.data,
                               skip_unknown=s.skip_unknown, keep_held_out=s.keep_held_out)
    if run.cfg.pipeline.rater == "simulated":
        data, sim_auc = run.data, run.cfg.pipeline.simulated_auc
        if data.train_noise is None:
            raise UserError(f"pipeline.rater = 'simulated' needs ground-truth noise flags; "
                            f"{data.name} has none (use data.synthetic_noise)")
        cands = load_candidates(run.dir / CANDIDATES_FILE)
        if sim_auc is None:
            v, summary = simulate_verdicts(cands, data.train, data.train_noise,
                                           error_rate=run.cfg.pipeline.simulated_error,
                                           seed=run.cfg.train.seed)
        else:
            v, summary = simulate_auc_verdicts(cands, data.train, data.train_noise, auc=sim_auc,
                                               seed=run.cfg.train.seed,
                                               decide=threshold_decider(run.cfg.verdicts,
                                                                        load_audits(run.dir)))
        write_simulated_verdicts(run.dir / "verdicts.parquet", v, summary)
        return summary
    source = None
    if run.cfg.rate.file is not None:  # decided from the judgments the rate stage imported
        if not judgments_current(run):  # replaced by hand since: the rate stage's work again
            import_judgments(run.dir, run.cfg.rate.file, source=run.cfg.rate.source or "",
                             data=run.data, skip_unknown=run.cfg.rate.skip_unknown,
                             as_last_rating=True)
        source = run.cfg.rate.source
    return write_verdicts(run.dir, run.cfg.verdicts, audits=load_audits(run.dir),
                          train=run.data.train, source=source, data=run.data)


def _read_counts(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / COUNTS_FILE
    try:
        counts = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return counts if isinstance(counts, dict) else {}
