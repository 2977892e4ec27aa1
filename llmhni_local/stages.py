"""One library function per LLM-side stage body, called by both the pipeline and the CLI.

Each entry point (``llmhni run`` through :mod:`llmhni_local.pipeline`, or the single-stage
commands ``profiles``, ``embed``, ``candidates``, ``rate``) only gathers settings and prints;
what a stage does and writes is decided here, once, so a setting cannot be honoured by one
entry point and ignored by the other.

Outputs, relative to the run folder (:data:`OUTPUTS`): a stage whose outputs are missing runs
again even when its settings are unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from llmhni_local.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    from llmhni_local.core.config import DataSettings
    from llmhni_local.data.dataset import Interactions
    from llmhni_local.engine.settings import EmbedderSettings, RaterSettings, TuneSettings
    from llmhni_local.llmhni.candidates import CandidateSettings
    from llmhni_local.rating.plan import RateReport, RateSettings
    from llmhni_local.text.embed import Embeddings
    from llmhni_local.text.profiles import Profiles, ProfileSettings

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


#: With the simulated rater (``pipeline.rater = "simulated"``) the rate stage stores nothing.
SIMULATED_OUTPUTS: dict[str, tuple[str, ...]] = {"rate": ()}

#: Where ``tune.kind = "probe"`` puts the probe folder and its summary, relative to the run.
TUNE_PROBE_DIR = "tune/probe"
TUNE_SUMMARY = "tune/tune.json"

#: What the ``tune`` stage writes per ``tune.kind``.
TUNE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "none": (), "probe": (TUNE_SUMMARY, f"{TUNE_PROBE_DIR}/card.json",
                          f"{TUNE_PROBE_DIR}/probe.safetensors")}


def missing_outputs(run_dir: str | Path, stage: str, *, simulated: bool = False,
                    tune: str = "none") -> list[str]:
    """The declared outputs of ``stage`` that ``run_dir`` lacks (empty: all there); ``tune``
    is ``tune.kind``."""
    declared = SIMULATED_OUTPUTS.get(stage, OUTPUTS[stage]) if simulated else OUTPUTS[stage]
    if stage == "tune":
        declared = TUNE_OUTPUTS[tune]
    return [o for o in declared if not (Path(run_dir) / o).exists()]


# ---------------------------------------------------------------------------- profiles
def check_can_summarize(profiles: "ProfileSettings", rater: "RaterSettings") -> None:
    """``profiles.summarize`` needs the rating backend's free generation (``generate``);
    checked before data is loaded or an engine starts."""
    if not profiles.summarize:
        return
    from llmhni_local.backends import rating_backend_class

    if not callable(getattr(rating_backend_class(rater.backend), "generate", None)):
        raise UserError(f"profiles.summarize is not implemented for the {rater.backend} rating "
                        "backend (it has no generate(prompts, max_tokens) -> texts); build "
                        "profiles without summaries")


def build_profiles(run_dir: str | Path, data: "Interactions", *, data_settings: "DataSettings",
                   settings: "ProfileSettings", rater: "RaterSettings",
                   prompts_dir: str | Path | None = None) -> "Profiles":
    """Build, optionally summarise (``settings.summarize``) and save the profiles of ``data``.

    The data settings are recorded in ``profiles/manifest.json`` (``data_settings``) so later
    stages reload the very data the profiles came from.
    """
    from llmhni_local.text.profiles import make_profiles, save_profiles, summarize_users

    check_can_summarize(settings, rater)
    prof = make_profiles(data, settings, prompts_dir)
    prof.info["data_settings"] = dataclasses.asdict(data_settings)
    if settings.summarize:
        from llmhni_local.backends import make_rating_backend

        backend = make_rating_backend(rater)
        try:
            prof = summarize_users(prof, backend.generate, settings, prompts_dir,
                                   model_id=backend.model_id)
        finally:
            backend.close()
    save_profiles(run_dir, prof)
    return prof


def profiles_data(run_dir: str | Path, fallback: "DataSettings") -> "Interactions":
    """The data the saved profiles of ``run_dir`` were built from, checked by fingerprint."""
    from llmhni_local.core.config import DataSettings, build
    from llmhni_local.data import load_data
    from llmhni_local.text.profiles import data_fingerprint, load_profiles

    prof = load_profiles(run_dir)
    saved = prof.info.get("data_settings")
    dataset = load_data(build(DataSettings, saved, "data") if saved else fallback)
    if data_fingerprint(dataset) != prof.info.get("data"):
        raise UserError(f"{run_dir}: the data does not match the one the profiles were built "
                        "from; run `profiles` again")
    return dataset


# ---------------------------------------------------------------------------- embed
def embed_run(run_dir: str | Path, settings: "EmbedderSettings", *, force: bool = False,
              progress: bool = True, embed: Any = None) -> "Embeddings":
    """Embed the profiles of ``run_dir`` (or reuse vectors saved under the same key); ``embed``
    (the ``[embed]`` table) says where: in process or as a Ray Data job."""
    from llmhni_local.text.embed import embed_profiles, embedder_model_id

    return embed_profiles(run_dir, settings, model_id=embedder_model_id(settings), force=force,
                          progress=progress, embed=embed)


# ---------------------------------------------------------------------------- candidates
def score_fn_from_run(pretrained: str | Path,
                      dataset: "Interactions") -> Callable[[np.ndarray], np.ndarray]:
    """``score_fn(users) -> scores`` of a trained recommender run (s = <e_u, e_i>)."""
    import torch

    from llmhni_local.graph.adjacency import bipartite_adjacency
    from llmhni_local.train.run import load_trained

    model = load_trained(Path(pretrained), dataset)
    adj = bipartite_adjacency(dataset.train, dataset.n_users, dataset.n_items)
    with torch.no_grad():
        u, i = model(adj)
    u, i = u.float(), i.float()

    def score_fn(users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (u[torch.as_tensor(users)] @ i.T).numpy()

    return score_fn


def score_fn_from_matrix(path: str | Path,
                         dataset: "Interactions") -> Callable[[np.ndarray], np.ndarray]:
    """``score_fn`` reading rows of a saved ``(users x items)`` ``.npy`` score matrix."""
    matrix = np.load(path, mmap_mode="r")
    if matrix.shape != (dataset.n_users, dataset.n_items):
        raise UserError(f"{path}: shape {matrix.shape}, expected "
                        f"({dataset.n_users}, {dataset.n_items})")
    return lambda users: np.asarray(matrix[users])


def choose_candidates(run_dir: str | Path, score_fn: Callable[[np.ndarray], np.ndarray],
                      dataset: "Interactions", settings: "CandidateSettings",
                      source: str) -> dict[str, Any]:
    """Select candidate pairs into ``candidates.parquet`` and describe them in
    ``candidates.json`` (settings, counts, data fingerprint, score source); returns the latter."""
    from llmhni_local.core.io import write_json
    from llmhni_local.llmhni.candidates import (
        CANDIDATES_FILE,
        count_kinds,
        save_candidates,
        select_candidates,
    )
    from llmhni_local.text.profiles import data_fingerprint

    c = settings
    cands = select_candidates(score_fn, dataset.user_item_lists("train"), dataset.n_items,
                              k_neg=c.k_neg, k_pos=c.k_pos, k_pos_share=c.k_pos_share,
                              budget=c.budget, seed=c.seed, batch_users=c.batch_users)
    if not len(cands):
        raise ConfigError("candidates: the settings selected no pair (candidates.k_neg, k_pos, "
                          "k_pos_share, budget)")
    save_candidates(Path(run_dir) / CANDIDATES_FILE, cands)
    info = {"settings": dataclasses.asdict(c), "counts": count_kinds(cands),
            "pairs": int(len(cands)), "users": int(len(np.unique(cands["user"]))),
            "data": data_fingerprint(dataset), "source": str(source)}
    write_json(Path(run_dir) / "candidates.json", info)
    return info


# ---------------------------------------------------------------------------- rate
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
    from llmhni_local.core.offline import enforce_offline
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.rating.run import rate_candidates, rater_model_id

    names = ("likelihood",) if settings.mode == "likelihood" else tuple(VIEW_TEMPLATES.values())
    load_templates(names, prompts_dir)  # fail before model checks
    enforce_offline()
    model_id, adapter = rater_model_id(rater, prompts_dir, mode=settings.mode)

    def make_backend():
        from llmhni_local.backends import make_rating_backend

        return make_rating_backend(rater)

    report = rate_candidates(run_dir, make_backend, model_id=model_id, adapter=adapter,
                             settings=settings, prompts_dir=prompts_dir, progress=progress)
    from llmhni_local.verdicts.rules import VerdictSettings, describe_constant

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
    from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
    from llmhni_local.rating.plan import read_rating_manifest
    from llmhni_local.rating.store import VIEWS, JudgmentStore, Key
    from llmhni_local.verdicts.decide import compute_verdicts, verdict_counts
    from llmhni_local.verdicts.rules import constant_views

    run_dir = Path(run_dir)
    manifest = read_rating_manifest(run_dir)
    keys = {v: Key(manifest["model_id"], manifest["adapter"], manifest["views"][v]["prompt_hash"])
            for v in VIEWS}
    with JudgmentStore(run_dir, create=False) as store:
        judgments = store.frame(views=keys)
    # the same table and counts the verdicts stage writes, so both name the same views
    counts = verdict_counts(compute_verdicts(load_candidates(run_dir / CANDIDATES_FILE),
                                             judgments))
    return constant_views(counts["labels"], share)


# ---------------------------------------------------------------------------- tune
def tune_run(run_dir: str | Path, data: "Interactions", settings: "TuneSettings", *,
             base: str, max_liked: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``tune.kind = "probe"``: fit a probe on ``rater.model`` (``base``) into
    ``RUN/tune/probe/`` from ``settings.labels`` simulated audit labels of training pairs that
    are not candidates of the run (``audit simulate --pool train``), and describe it in
    ``RUN/tune/tune.json``; returns that summary."""
    import time

    from llmhni_local.audit.simulated_audits import RATING_RULE, simulate_sample
    from llmhni_local.core.io import write_json
    from llmhni_local.text.profiles import load_profiles
    from llmhni_local.tune.probe import ProbeSettings, fit_probe

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
                     run_dir=run_dir, force=True, log=log)
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
