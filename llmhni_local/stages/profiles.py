"""Stage ``profiles`` (method stage 1): text profiles of users and items from training
interactions only, optionally summarised by the rater model (``profiles.summarize``; a killed
summarising resumes from ``RUN/profiles/summaries.partial.jsonl``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llmhni_local.backends import make_rating_backend, rating_backend_class
from llmhni_local.core.config import DataSettings, build
from llmhni_local.core.errors import UserError
from llmhni_local.data import load_data
from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.stages.context import Run
from llmhni_local.text.profiles import (
    PROFILES_DIR,
    SUMMARIES_PARTIAL,
    Profiles,
    ProfileSettings,
    data_fingerprint,
    load_profiles,
    make_profiles,
    save_profiles,
    shuffle_profiles,
    summarize_users,
)


def check_can_summarize(profiles: "ProfileSettings", rater: "RaterSettings") -> None:
    """``profiles.summarize`` needs the rating backend's free generation (``generate``);
    checked before data is loaded or an engine starts."""
    if not profiles.summarize:
        return

    if not rating_backend_class(rater.backend).serves("generate"):
        raise UserError(f"profiles.summarize is not implemented for the {rater.backend} rating "
                        "backend (it has no generate(prompts, max_tokens) -> texts); build "
                        "profiles without summaries")


def build_profiles(run_dir: str | Path, data: "Interactions", *, data_settings: "DataSettings",
                   settings: "ProfileSettings", rater: "RaterSettings",
                   prompts_dir: str | Path | None = None, progress: bool = False) -> "Profiles":
    """Build, optionally summarise (``settings.summarize``) and save the profiles of ``data``.

    The data settings are recorded in ``profiles/manifest.json`` (``data_settings``) so later
    stages reload the very data the profiles came from.
    """
    check_can_summarize(settings, rater)
    prof = make_profiles(data, settings, prompts_dir)
    prof.info["data_settings"] = dataclasses.asdict(data_settings)
    partial = Path(run_dir) / PROFILES_DIR / SUMMARIES_PARTIAL
    if settings.summarize:
        backend = make_rating_backend(rater)
        try:
            prof = summarize_users(prof, backend.generate, settings, prompts_dir,
                                   model_id=backend.model_id, progress=progress,
                                   partial=partial)
        finally:
            backend.close()
    if settings.shuffle_share > 0:
        prof = shuffle_profiles(prof, settings.shuffle_share, settings.shuffle_seed)
    save_profiles(run_dir, prof)
    partial.unlink(missing_ok=True)  # saved: a later summarising starts afresh
    return prof


def profiles_data(run_dir: str | Path, fallback: "DataSettings") -> "Interactions":
    """The data the saved profiles of ``run_dir`` were built from, checked by fingerprint."""
    prof = load_profiles(run_dir)
    saved = prof.info.get("data_settings")
    dataset = load_data(build(DataSettings, saved, "data") if saved else fallback)
    if data_fingerprint(dataset) != prof.info.get("data"):
        raise UserError(f"{run_dir}: the data does not match the one the profiles were built "
                        "from; run `profiles` again")
    return dataset


def run_stage(run: Run) -> dict:

    profiles = build_profiles(run.dir, run.data, data_settings=run.cfg.data,
                              settings=run.cfg.profiles, rater=run.cfg.rater,
                              progress=run.progress)
    return {"hash": profiles.hash, "users": len(profiles.users), "items": len(profiles.items),
            "summarized": bool(profiles.info.get("summarized"))}
