"""Stage ``rate`` (method stage 5): every candidate pair read by the rater from both views,
resumable, into the judgment store; or, with ``rate.file``, judgments made elsewhere imported
into it instead (docs/IMPORTING.md, "Judgments from elsewhere").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from llmhni_local.backends import make_rating_backend
from llmhni_local.core.offline import enforce_offline
from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.judgments.imported import import_judgments
from llmhni_local.judgments.plan import RateReport, RateSettings, last_rating
from llmhni_local.judgments.run import checked_rater_id, rate_candidates
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
from llmhni_local.stages.context import Run
from llmhni_local.stages.verdicts import run_data
from llmhni_local.verdicts.decide import compute_verdicts, verdict_counts
from llmhni_local.verdicts.rules import VerdictSettings, constant_views, describe_constant


def rate_run(run_dir: str | Path, rater: "RaterSettings", settings: "RateSettings", *,
             prompts_dir: str | Path | None = None, progress: bool = True,
             constant_share: float | None = None, log: Callable[[str], None] = print
             ) -> tuple["RateReport", str, str]:
    """Rate every candidate pair of ``run_dir`` in both views (resumable).

    A rater one label of which takes ``constant_share`` (``verdicts.constant_share``; default
    that setting's default) of a view's answers is named in one line through ``log``
    (:func:`constant_rating`).

    Returns ``(report, model_id, adapter)``, the ids judgments are stored under.
    """
    names = ("likelihood",) if settings.mode == "likelihood" else tuple(VIEW_TEMPLATES.values())
    load_templates(names, prompts_dir)  # fail before model checks
    enforce_offline()
    model_id, adapter = checked_rater_id(rater, prompts_dir, mode=settings.mode)

    def make_backend():
        return make_rating_backend(rater)

    report = rate_candidates(run_dir, make_backend, model_id=model_id, adapter=adapter,
                             settings=settings, prompts_dir=prompts_dir, progress=progress)

    share = VerdictSettings().constant_share if constant_share is None else constant_share
    constant = constant_rating(run_dir, share)
    if constant:
        # said where the judgments are made, before a training reads verdicts that may be
        # all one class; verdicts.json records the same (constant, rater_constant)
        log(f"rate: warning: {describe_constant(constant, share)}; its argmax verdicts carry "
            "little or no information (rater_constant in verdicts.json)")
    return report, model_id, adapter


def constant_rating(run_dir: str | Path, share: float) -> dict[str, dict[str, Any]]:
    """The views of ``run_dir``'s last rating run whose answers are nearly one label
    (:func:`llmhni_local.verdicts.rules.constant_views` over the candidates' answered
    judgments); ``{}`` for none, or when the judgments carry scores and no labels."""
    run_dir = Path(run_dir)
    judgments, _ = last_rating(run_dir)
    # the same table and counts the verdicts stage writes, so both name the same views
    counts = verdict_counts(compute_verdicts(load_candidates(run_dir / CANDIDATES_FILE),
                                             judgments))
    return constant_views(counts["labels"], share)


def import_judgments_into(run_dir: str | Path, path: str | Path, *, source: str,
                          skip_unknown: bool = False) -> dict[str, Any]:
    """``judgments import``: the file's judgments on the run's data
    (:func:`llmhni_local.stages.verdicts.run_data`) into the judgment store under
    ``source`` (:func:`llmhni_local.judgments.imported.import_judgments`); returns the
    source's rating manifest."""
    return import_judgments(run_dir, path, source=source, data=run_data(run_dir),
                            skip_unknown=skip_unknown)


def import_stage(run: Run) -> dict[str, Any]:
    """With ``rate.file``: the file's judgments into the store under ``rate.source``, made the
    run's last rating (``rating.json``), so the verdicts stage decides from them."""
    s = run.cfg.rate
    return import_judgments(run.dir, s.file, source=s.source or "", data=run.data,
                            skip_unknown=s.skip_unknown, as_last_rating=True)


def run_stage(run: Run) -> dict:
    if run.cfg.pipeline.rater == "simulated":
        return {"simulated": True, "skipped": "the simulated rater reads noise flags, no LLM"}
    if run.cfg.verdicts.file is not None:
        return {"imported": True, "skipped": "the verdicts come from verdicts.file, no LLM"}
    if run.cfg.rate.file is not None:
        return import_stage(run)

    report, rid, adapter = rate_run(run.dir, run.rater, run.cfg.rate, progress=run.progress,
                                    constant_share=run.cfg.verdicts.constant_share, log=run.log)
    return {"model_id": rid, "adapter": adapter, **report.as_dict()}
