"""The report's table of what the LLM costs beside the training.

Each stage's wall time from its record (``RUN/stages/<stage>.json``, written by the pipeline),
the LLM stages' share, the speed of the last rating call (``rating.json``) and the time a
coverage of 0.2 / 0.5 / 0.8 of the noise would take at it (docs/DESIGN.md, "The alignment
picture and the LLM's cost").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmhni_local.core.errors import UserError
from llmhni_local.judgments.plan import RATING_MANIFEST
from llmhni_local.llmhni.candidates import add_times, coverage_costs

#: Stages that run or prepare the language models, and the recommender's own; the others
#: (data, candidates, verdicts) are listed but in neither group.
LLM_STAGES = ("profiles", "embed", "align", "tune", "rate")
REC_STAGES = ("rec_pre", "train")
#: The order of stages/plan.py's PLAN (this room sits below ``stages`` and cannot import it).
STAGE_ORDER = ("data", "profiles", "embed", "align", "rec_pre", "candidates", "tune", "rate",
               "verdicts", "train")
COVERAGES = (0.2, 0.5, 0.8)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: holds a JSON {type(obj).__name__}, not an object")
    return obj


def stage_times(run_dir: Path, ran: dict[str, bool] | None = None) -> dict[str, Any]:
    """Each stage record's ``seconds`` (``RUN/stages/<stage>.json``, the report's own left
    out), whether the stage was reused, and the LLM stages' share of LLM + recommender time.

    A reused stage's record is the one of the run that made its outputs, so its time is that
    run's. ``ran`` (the pipeline's, stage -> ran) says which were reused; without it the run's
    ``manifest.json`` says so for stages whose key it names."""
    stages = run_dir / "stages"
    recs = {p.stem: _read_json(p) for p in sorted(stages.glob("*.json")) if p.stem != "report"}
    if ran is None:
        path = run_dir / "manifest.json"
        marks = (_read_json(path) if path.is_file() else {}).get("stages") or {}
        ran = {s: m["ran"] for s, m in marks.items() if s in recs and isinstance(m, dict)
               and m.get("key") == recs[s].get("key") and isinstance(m.get("ran"), bool)}
    rows = []
    for s in sorted(recs, key=lambda s: (*STAGE_ORDER, s).index(s)):
        sec = recs[s].get("seconds")
        if not isinstance(sec, (int, float)):
            raise UserError(f"{stages / (s + '.json')}: 'seconds' is {sec!r}, not a number")
        rows.append({"stage": s, "seconds": float(sec), "reused": ran.get(s) is False,
                     "group": "LLM" if s in LLM_STAGES else "recommender" if s in REC_STAGES
                     else "other"})
    llm = sum(r["seconds"] for r in rows if r["group"] == "LLM")
    rec = sum(r["seconds"] for r in rows if r["group"] == "recommender")
    return {"stages": rows, "llm_seconds": llm, "recommender_seconds": rec,
            "llm_share": llm / (llm + rec) if llm + rec > 0 else float("nan")}


def rating_speed(run_dir: Path) -> dict[str, Any] | None:
    """Judgments per second of the last rating call (``rating.json``'s ``last_call``: rated
    over seconds, engine start included), or None when no call rated anything."""
    path = run_dir / RATING_MANIFEST
    manifest = _read_json(path) if path.is_file() else {}
    call = manifest.get("last_call") or {}
    rated, seconds = call.get("rated"), call.get("seconds")
    if not rated or not isinstance(seconds, (int, float)) or seconds <= 0:
        return None
    return {"model_id": manifest.get("model_id"), "rated": int(rated), "seconds": float(seconds),
            "judgments_per_s": rated / seconds}


def coverage_times(score_fn, data, speed: float | None) -> dict[str, Any]:
    """``coverage_costs`` for :data:`COVERAGES` under ``score_fn``'s ranking (Rec_pre's), with
    ``add_times``' judgments (2 per pair, the user and the item view) and seconds at ``speed``
    (None: no seconds)."""
    if score_fn is None and data.train_noise is not None:
        return {"available": False, "why": "no rec_pre/model.pt in this run folder"}
    costs = coverage_costs(score_fn, data, COVERAGES)  # says so itself when there are no flags
    add_times(costs, speed, None, 0)
    return costs


def _seconds(t: float) -> str:
    return f"{t:.0f} ({t / 3600:.1f} h)" if t >= 3600 else f"{t:.0f}"


def cost_section(run_dir: Path, data, score_fn=None,
                 ran: dict[str, bool] | None = None) -> tuple[list[str], dict[str, Any]]:
    """The report's lines: stage times and the LLM's share (:func:`stage_times`), the rating
    speed (:func:`rating_speed`) and the time of each coverage (:func:`coverage_times`);
    nothing without stage records."""
    times = stage_times(run_dir, ran)
    if not times["stages"]:
        return [], {}
    speed = rating_speed(run_dir)
    costs = coverage_times(score_fn, data, speed and speed["judgments_per_s"])
    train_s = sum(r["seconds"] for r in times["stages"] if r["stage"] == "train")
    lines = ["## What the LLM costs beside the training", "",
             (f"LLM stages: {', '.join(LLM_STAGES)}; recommender stages: {', '.join(REC_STAGES)}. "
             f"The LLM stages took {times['llm_share']:.1%} of the two groups' time "
             f"({times['llm_seconds']:.1f} s against {times['recommender_seconds']:.1f} s). A "
             "reused stage shows the time recorded when it ran."), "",
             "| stage | group | seconds | |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['group']} | {r['seconds']:.1f} | "
              f"{'reused' if r['reused'] else ''} |" for r in times["stages"]]
    lines += ["", (f"Rating speed: {speed['judgments_per_s']:.2f} judgments/s ({speed['rated']} "
                   f"judgments of {speed['model_id']} in {speed['seconds']:.1f} s, engine start "
                   "included)." if speed else "Rating speed: not measured (no rating call in "
                   "this run folder rated anything)."), "",
              ("| noise coverage | observed pairs | judgments | seconds at that speed "
              "| x the train stage |"), "|---|---|---|---|---|"]
    for row in costs.get("targets") or [{"coverage": c} for c in COVERAGES]:
        if "observed_pairs" not in row:
            lines.append(f"| {row['coverage']:g} | {costs['why']} | | | |")
            continue
        t = row["seconds_observed"]
        lines.append(f"| {row['coverage']:g} | {row['observed_pairs']} | "
                     f"{row['judgments_observed']} | "
                     f"{'-' if t is None else _seconds(t)} | "
                     f"{f'{t / train_s:.1f}' if t is not None and train_s else '-'} |")
    lines += ["", ("Coverage c: the rated candidates hold a share c of the flagged-noisy training "
              "edges when each user's training items are taken from Rec_pre's lowest score up "
              "(the cheaper of a count or a share per user, as `rater assess` computes it)."), ""]
    return lines, {"times": times, "speed": speed, "coverage_costs": costs}
