"""The stages before and after training, one function each: ``stage_X(run) -> summary``.

Each is a thin wrapper over the library function of :mod:`llmhni_local.stages` (shared with
the single-stage commands) that reads the run's settings and returns the summary the stage
record keeps. Training is :mod:`llmhni_local.pipeline.train_stage`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import sha256_text, write_json
from llmhni_local.engine.settings import RaterSettings

if TYPE_CHECKING:
    from llmhni_local.pipeline.context import Run


# ---------------------------------------------------------------------------- the stages
def stage_data(run: Run) -> dict:
    data = run.data
    data_key = sha256_text(json.dumps(data.sources, sort_keys=True))
    # Summaries depend on the rater model too (its id is empty when profiles.summarize is off).
    run.extra_keys["profiles"] = data_key + run.extra_keys.get("summarizer", "")
    run.extra_keys["rec_pre"] = data_key
    return data.info()


def stage_profiles(run: Run) -> dict:
    from llmhni_local.stages import build_profiles

    profiles = build_profiles(run.dir, run.data, data_settings=run.cfg.data,
                              settings=run.cfg.profiles, rater=run.cfg.rater)
    return {"hash": profiles.hash, "users": len(profiles.users), "items": len(profiles.items),
            "summarized": bool(profiles.info.get("summarized"))}


def embedder_id(run: Run) -> str:
    from llmhni_local.text.embed import embedder_model_id

    return embedder_model_id(run.cfg.embedder)


def rater_id_of(run: Run, settings: RaterSettings | None = None) -> tuple[str, str]:
    """``(model_id, adapter)`` as every entry point stores judgments under them (of
    ``settings``, by default ``[rater]`` as configured)."""
    from llmhni_local.rating.run import rater_model_id

    return rater_model_id(settings or run.cfg.rater)


def stage_embed(run: Run) -> dict:
    from llmhni_local.stages import embed_run

    emb = embed_run(run.dir, run.cfg.embedder, progress=run.progress, embed=run.cfg.embed)
    return {"dim": int(emb.users.shape[1]), "model_id": emb.meta.get("model_id"),
            "reused_vectors": emb.reused}


def stage_align(run: Run) -> dict:
    from llmhni_local.core.device import resolve_device
    from llmhni_local.core.io import atomic_path
    from llmhni_local.llmhni.align import similarity_vectors
    from llmhni_local.text.embed import load_embeddings

    emb = load_embeddings(run.dir)
    device = resolve_device(run.cfg.train.device)  # the alignment MLP trains where the models do
    out: dict[str, Any] = {}
    folder = run.dir / "align"
    folder.mkdir(parents=True, exist_ok=True)
    # Both similarity spaces are stored: aligned z' (LLMHNI) and raw x (no-alignment ablation).
    for name, on in (("aligned", True), ("raw", False)):
        s = dataclasses.replace(run.cfg.llmhni, alignment=on)
        zu, zi, history = similarity_vectors(emb.users, emb.items, run.data.train, s,
                                             seed=run.cfg.train.seed, device=device)
        with atomic_path(folder / f"{name}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, users=zu, items=zi)
        if history:
            write_json(folder / "history.json", history)
            out["final_loss"] = history[-1].get("loss")
        out[name] = {"dim": int(zu.shape[1])}
    return out


def stage_rec_pre(run: Run) -> dict:
    from llmhni_local.train.run import train_run

    cfg = run.cfg.train_config(loss="bpr")
    run.log(f"[rec_pre] {cfg.model.name} + BPR on {run.data.name}")
    r = train_run(cfg, run.data, run.dir / "rec_pre", progress=run.progress)
    return {"best_epoch": r.best_epoch, "test": r.test, "val": r.val,
            "epoch_seconds": r.epoch_seconds}


def stage_candidates(run: Run) -> dict:
    from llmhni_local.llmhni.candidates import CANDIDATES_FILE, coverage, load_candidates
    from llmhni_local.stages import choose_candidates, score_fn_from_run

    info = choose_candidates(run.dir, score_fn_from_run(run.dir / "rec_pre", run.data), run.data,
                             run.cfg.candidates, source=str(run.dir / "rec_pre"))
    cands = load_candidates(run.dir / CANDIDATES_FILE)
    cov = coverage(cands, run.data.train, run.data.train_noise)
    return {"pairs": info["pairs"], **info["counts"], **({"coverage": cov} if cov else {})}


def stage_tune(run: Run) -> dict:
    if run.cfg.tune.kind == "none":
        return {"kind": "none"}
    from llmhni_local.stages import tune_run

    run.log(f"[tune] {run.cfg.tune.kind} on {run.cfg.tune.labels} simulated audit labels "
            "(training pairs that are not candidates)")
    return tune_run(run.dir, run.data, run.cfg.tune, base=run.cfg.rater.model,
                    max_liked=run.cfg.rate.max_liked, log=run.log)


def stage_rate(run: Run) -> dict:
    if run.cfg.pipeline.rater == "simulated":
        return {"simulated": True, "skipped": "the simulated rater reads noise flags, no LLM"}
    from llmhni_local.stages import rate_run

    report, rid, adapter = rate_run(run.dir, run.rater, run.cfg.rate, progress=run.progress,
                                    constant_share=run.cfg.verdicts.constant_share, log=run.log)
    return {"model_id": rid, "adapter": adapter, **report.as_dict()}


def stage_verdicts(run: Run) -> dict:
    if run.cfg.pipeline.rater == "simulated":
        from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
        from llmhni_local.verdicts.simulated import (
            simulate_auc_verdicts,
            simulate_verdicts,
            write_simulated_verdicts,
        )

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
                                               decide=_score_rule(run))
        write_simulated_verdicts(run.dir / "verdicts.parquet", v, summary)
        return summary
    from llmhni_local.audit.records import load_audits
    from llmhni_local.verdicts.decide import write_verdicts

    return write_verdicts(run.dir, run.cfg.verdicts, audits=load_audits(run.dir),
                          train=run.data.train)


def _score_rule(run: Run):
    """The ``[verdicts]`` threshold rule as a function of the AUC-graded simulated rater's
    scores (``method.simulated_rater.simulate_auc_verdicts``).

    The simulated rater gives one score per pair; it enters the threshold rule as both views'
    High score, so the rule's own tau code (``verdicts.decide._taus``: ``tau_from_share`` at
    ``verdicts.target_share``, or the taus with the best kappa on the run's audited pairs,
    with its ``min_audits`` check and cross-fitted kappa) decides, exactly as for a real
    rater's scores. ``target_share`` is the share of observed candidates called hard (kept);
    ``1 - target_share`` is called noisy."""
    import pandas as pd

    from llmhni_local.audit.records import load_audits
    from llmhni_local.core.errors import ConfigError
    from llmhni_local.verdicts.decide import _audited, _taus
    from llmhni_local.verdicts.rules import jsonable

    s = run.cfg.verdicts
    if s.rule != "threshold" or s.calibration != "none":
        raise ConfigError(f"pipeline.simulated_auc draws a score per pair, not labels or label "
                          f"probabilities: it needs verdicts.rule = 'threshold' and "
                          f"verdicts.calibration = 'none' (got {s.rule!r}, {s.calibration!r})")
    audits = load_audits(run.dir)

    def decide(scored: np.ndarray) -> tuple[np.ndarray, dict]:
        table = pd.DataFrame({"user": scored["user"], "item": scored["item"],
                              "verdict": "noisy"})  # every observed candidate is judged
        pairs = zip(table["user"].astype(int), table["item"].astype(int))
        fit = ~np.array([p in audits.trained for p in pairs], dtype=bool)
        truth, audit_info = _audited(table, audits, fit)
        info: dict[str, Any] = {"rule": "threshold", "calibration": "none",
                                "score": "the simulated rater's binormal score, as both views'"}
        score = scored["score"].astype(np.float64)
        taus = _taus({"user": score, "item": score}, s, fit, truth, audit_info, info)
        hard = (score >= taus["user"]) & (score >= taus["item"])
        info["realised_share_high"] = float(hard[fit].mean()) if fit.any() else None
        return hard, jsonable(info)

    return decide


def stage_report(run: Run) -> dict:
    from llmhni_local.report import write_report

    return write_report(run.dir, run.data)
