"""``assess_run``: the steps of an assessment in order (docs/DESIGN.md, "Assessing a rater").

1. :func:`prepare`: check the run, find the tuning users, draw the held-out users and the
   sample, score it with Rec_pre; every refusal happens here, before any engine starts;
2. :func:`write_inputs`: ``RUN/assess/`` gets the run's profiles, the sample as its
   ``candidates.parquet`` and ``sample.parquet``;
3. :func:`rate_sample`: the rating loop on that folder (its keyed store skips what is stored);
4. :func:`judged_table`: the sample with both views' labels and scores;
5. :func:`compute_figures`, then the PNG and ``assess.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmhni_local.assess.figures import (
    BatchClock,
    add_times,
    agreement_figures,
    constant_view,
    coverage_costs,
    label_counts,
    measured_speed,
    non_llm_matrix,
    run_coverage,
    task_figures,
    threshold_figures,
    view_table,
)
from llmhni_local.assess.plot import plot_assess
from llmhni_local.assess.sample import (
    check_run,
    draw_sample,
    draw_users,
    held_out_users,
    rec_pre_score_fn,
    run_audits,
    sample_candidates,
    tuning_pairs,
)
from llmhni_local.assess.settings import (
    ASSESS_DIR,
    CLASSES,
    CONSTANT_TEXT,
    PLOT_FILE,
    REPORT_FILE,
    SAMPLE_FILE,
    SCORE_TEXT,
    AssessSettings,
)
from llmhni_local.backends import make_rating_backend
from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, jsonable, write_json
from llmhni_local.core.offline import enforce_offline
from llmhni_local.engine.api import LABELS
from llmhni_local.engine.prompts import load_templates
from llmhni_local.judgments.plan import view_template
from llmhni_local.judgments.run import checked_rater_id, rate_candidates
from llmhni_local.judgments.store import VIEWS, JudgmentStore
from llmhni_local.llmhni.candidates import (
    CANDIDATES_FILE,
    count_kinds,
    load_candidates,
    save_candidates,
)
from llmhni_local.text.profiles import data_fingerprint, load_profiles, save_profiles

if TYPE_CHECKING:
    from llmhni_local.data.dataset import Interactions
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.plan import RateReport, RateSettings

#: ``rate(folder, on_batch) -> RateReport``: rates the candidates of ``folder``.
RateFn = Callable[[Path, Callable[[int], None]], "RateReport"]


def default_rate(rater: RaterSettings, settings: RateSettings, *,
                 prompts_dir: str | Path | None = None, progress: bool = True) -> RateFn:
    """The rating loop (``rate_candidates``) with ``rater`` as ``stages.rate_run`` calls it
    (``rate.mode`` honoured: judge or likelihood reader), plus the batch callback that times
    the batches."""
    def rate(folder: Path, on_batch: Callable[[int], None]) -> RateReport:
        mode = getattr(settings, "mode", "judge")
        load_templates(tuple(sorted({view_template(v, mode) for v in VIEWS})), prompts_dir)
        enforce_offline()
        model_id, adapter = checked_rater_id(rater, prompts_dir, mode=mode)

        def make_backend():
            return make_rating_backend(rater)

        return rate_candidates(folder, make_backend, model_id=model_id, adapter=adapter,
                               settings=settings, prompts_dir=prompts_dir, progress=progress,
                               on_batch=on_batch)

    return rate


@dataclass
class Inputs:
    """What :func:`prepare` found: the run's parts the figures read, and the sample."""

    run_dir: Path
    folder: Path
    profiles: Any
    run_candidates: np.ndarray
    tuning: dict[str, set[tuple[int, int]]]
    held: np.ndarray
    users: np.ndarray
    sample: Any  # DataFrame (assess/sample.py: draw_sample)
    candidates: np.ndarray  # the sample as candidates, with Rec_pre's scores
    score_fn: Callable[[np.ndarray], np.ndarray]
    train_users: int  # users with training pairs


@dataclass
class Assessment:
    """What :func:`assess_run` found (``figures`` is what ``assess.json`` holds)."""

    figures: dict[str, Any]
    folder: Path
    constant: list[str] = field(default_factory=list)  # views named constant


def assess_run(run_dir: str | Path, rate: RateFn, settings: AssessSettings | None = None, *,
               data: Interactions, adapter: str | None = None, batch_size: int = 256,
               score_fn: Callable[[np.ndarray], np.ndarray] | None = None,
               rater_info: dict[str, Any] | None = None,
               log: Callable[[str], None] = lambda _: None) -> Assessment:
    """Assess a rater on ``RUN``'s held-out users; writes ``RUN/assess/``.

    Args:
        run_dir: the run folder (profiles, candidates, judgments).
        rate: rates a folder's candidates (:func:`default_rate`; tests pass a fake rater).
        settings: what to draw and compute. (default: ``AssessSettings()``)
        data: the run's data (checked against its profiles' fingerprint).
        adapter: the assessed rater's adapter folder: its ``pairs.json`` is a tuning set.
        batch_size: the rating batch size (for the steady speed).
        score_fn: Rec_pre's ``score_fn(users)``. (default: the run's, ``rec_pre_score_fn``)
        rater_info: what ``assess.json`` records of the rater besides its ids.
        log: progress lines.
    """
    settings = settings or AssessSettings()
    t0 = time.perf_counter()
    inputs = prepare(run_dir, settings, data=data, adapter=adapter, score_fn=score_fn)
    counts = ", ".join(f"{c} {int((inputs.sample['cls'] == c).sum())}" for c in CLASSES)
    log(f"sample: {len(inputs.sample)} pairs of {len(inputs.users)} held-out users ({counts})")
    write_inputs(inputs)
    report, speed = rate_sample(inputs.folder, rate, batch_size)
    table = judged_table(inputs.folder, inputs.sample, report)
    figures = compute_figures(inputs, table, settings, data, speed)
    figures.update(record(inputs, settings, report, rater_info))
    plot_assess(table, figures, inputs.folder / PLOT_FILE)
    figures["seconds"] = time.perf_counter() - t0
    return write_figures(inputs.folder, figures)


# ---------------------------------------------------------------------------- the steps
def prepare(run_dir: str | Path, settings: AssessSettings, *, data: Interactions,
            adapter: str | None, score_fn: Callable[[np.ndarray], np.ndarray] | None) -> Inputs:
    """Check the run and draw the sample; everything that can refuse does so here."""
    run_dir = Path(run_dir)
    check_run(run_dir)
    profiles = load_profiles(run_dir)
    if data_fingerprint(data) != profiles.info.get("data"):
        raise UserError(f"{run_dir}: the data given is not the data the profiles were built "
                        "from")
    tuning = tuning_pairs(run_dir, adapter)
    held = held_out_users(data, tuning)
    held_set = set(held.tolist())
    audits = run_audits(run_dir)
    audits = audits[np.array([int(u) in held_set for u in audits["user"]], dtype=bool)]
    rng = np.random.default_rng(settings.seed)
    users = draw_users(held, set(audits["user"].astype(int).tolist()), settings.users, rng)
    sample = draw_sample(data, users, settings, audits, rng)
    score_fn = score_fn or rec_pre_score_fn(run_dir, data)
    return Inputs(run_dir=run_dir, folder=run_dir / ASSESS_DIR, profiles=profiles,
                  run_candidates=load_candidates(run_dir / CANDIDATES_FILE), tuning=tuning,
                  held=held, users=users, sample=sample,
                  candidates=sample_candidates(sample, score_fn), score_fn=score_fn,
                  train_users=len(np.unique(data.train[:, 0])))


def write_inputs(inputs: Inputs) -> None:
    """``RUN/assess/``: the run's profiles (same hash, so the same prompt hashes), the sample
    as ``candidates.parquet`` and, with its classes and labels, ``sample.parquet``."""
    folder = inputs.folder
    folder.mkdir(parents=True, exist_ok=True)
    try:
        same = load_profiles(folder).hash == inputs.profiles.hash
    except Exception:  # noqa: BLE001 - absent or damaged: written again
        same = False
    if not same:
        save_profiles(folder, inputs.profiles)
    save_candidates(folder / CANDIDATES_FILE, inputs.candidates)
    with atomic_path(folder / SAMPLE_FILE) as tmp:
        inputs.sample.to_parquet(tmp, index=False, engine="pyarrow")


def rate_sample(folder: Path, rate: RateFn, batch_size: int) -> tuple[RateReport, dict]:
    """Rate what is missing; the speed of this call, or of the call that rated the stored
    judgments when this one rated none."""
    clock = BatchClock()
    report = rate(folder, clock)
    speed = measured_speed(report, clock, batch_size)
    previous = _previous_speed(folder, report.keys)
    if not report.rated and previous is not None:
        return report, {**previous, "rated": 0, "seconds": report.seconds,
                        "measured": "by the call that rated the stored judgments"}
    return report, {**speed, "measured": "this call"}


def judged_table(folder: Path, sample, report: RateReport):
    """The sample with both views' labels and scores, read from the store."""
    with JudgmentStore(folder, create=False) as store:
        judgments = store.frame(views=report.keys)
    return view_table(sample, judgments)


def compute_figures(inputs: Inputs, table, settings: AssessSettings, data: Interactions,
                    speed: dict[str, Any]) -> dict[str, Any]:
    """Per view and for both views together: labels, the constant check, AUCs, the LLM's
    share, kappas; the verdict kappa; speed and coverage costs."""
    non_llm = non_llm_matrix(table, inputs.candidates, data.train)
    agree = agreement_figures(table)
    views: dict[str, Any] = {}
    for v in VIEWS:
        counts = label_counts(table, v)
        judged = table[f"judged_{v}"].to_numpy(bool)
        views[v] = {
            "labels": counts,
            "labels_by_class": {c: label_counts(table, v, (table["cls"] == c).to_numpy())
                                for c in CLASSES},
            "constant": constant_view(counts, table[f"score_{v}"].to_numpy(np.float64)[judged],
                                      settings.constant_share),
            **{t: task_figures(table, t, [f"score_{v}"], non_llm, settings)
               for t in ("natural", "synthetic")},
            "agreement": agree[v]}
    constant = [v for v in VIEWS if views[v]["constant"]["constant"]]
    costs = coverage_costs(inputs.score_fn, data, settings.coverages)
    add_times(costs, speed.get("judgments_per_s_steady") or speed.get("judgments_per_s"),
              speed.get("start_seconds"), count_kinds(inputs.run_candidates)["unobserved"])
    costs["run"] = run_coverage(inputs.run_candidates, data)
    return {"constant": constant, "constant_text": CONSTANT_TEXT if constant else None,
            "views": views,
            "both_views": {t: task_figures(table, t, [f"score_{v}" for v in VIEWS], non_llm,
                                           settings) for t in ("natural", "synthetic")},
            "verdict": agree["verdict"], "verdict_threshold": threshold_figures(table, settings),
            "speed": speed, "coverage_costs": costs}


def record(inputs: Inputs, settings: AssessSettings, report: RateReport,
           rater_info: dict[str, Any] | None) -> dict[str, Any]:
    """What was assessed, on whom, with which labels."""
    sample = inputs.sample
    labelled = sample[sample["label"].notna()]
    audited = (labelled["label_source"] == "audit").to_numpy()
    key = next(iter(report.keys.values()))
    return {
        "run": str(inputs.run_dir), "folder": str(inputs.folder),
        "rater": {"model_id": key.model_id, "adapter": key.adapter, **(rater_info or {})},
        "simulated": bool(labelled["simulated"].astype(bool).any()),
        "labels": {"pairs": len(labelled), "audited": int(audited.sum()),
                   "audited_simulated": int((audited
                                             & labelled["simulated"].astype(bool)).sum()),
                   "simulated_from_ratings": int((labelled["label_source"]
                                                  == "simulated from rating").sum()),
                   "rule": "the run's audits where it has them, else >= 4 High, 3 Medium, "
                           "<= 2 Low (simulated)",
                   "counts": {lab: int((labelled["label"] == lab).sum()) for lab in LABELS}},
        "held_out": {"users_with_training_pairs": inputs.train_users,
                     "tuning_users": {k: len({u for u, _ in p}) for k, p in inputs.tuning.items()},
                     "held_out_users": len(inputs.held),
                     "drawn_users": len(inputs.users)},
        "sample": {"per_class": settings.sample, "seed": settings.seed,
                   "counts": {c: int((sample["cls"] == c).sum()) for c in CLASSES},
                   "classes": {"clean": "training pairs rated >= 3",
                               "noisy": "training pairs rated <= 2 (natural noise)",
                               "synthetic": "random pairs seen in no split, of the users of "
                                            "the clean sample"}},
        "score": SCORE_TEXT,
        "folds": {"k": settings.folds, "grouped_by": "user", "seed": settings.seed},
        "judgments": {"rated": report.rated, "skipped": report.skipped,
                      "failures": report.failures, "engine_started": report.engine_started},
        "settings": asdict(settings), "plot": str(inputs.folder / PLOT_FILE)}


def write_figures(folder: Path, figures: dict[str, Any]) -> Assessment:
    figures = jsonable(figures)
    write_json(folder / REPORT_FILE, figures)
    return Assessment(figures=figures, folder=folder, constant=list(figures["constant"]))


def _previous_speed(folder: Path, keys) -> dict[str, Any] | None:
    """The speed an earlier assessment of the same rater measured (``assess.json``)."""
    path = folder / REPORT_FILE
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return None
    key = next(iter(keys.values()))
    rater = old.get("rater") or {}
    if (rater.get("model_id"), rater.get("adapter")) != (key.model_id, key.adapter):
        return None
    speed = old.get("speed") or {}
    return speed if speed.get("judgments_per_s") else None
