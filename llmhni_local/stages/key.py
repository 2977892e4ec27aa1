"""Where a stage's cache key is made: one pure function of what the stage reads.

A key is the sha256 of the stage's name, the settings it reads (dotted paths of the run's
settings, :data:`llmhni_local.stages.plan.PLAN`), the keys of the stages it reads from, and
the content it reads that settings do not name: the data files' hashes, a model's weights
(its id holds their sha256), the prompt templates (:func:`content_hash`). A setting left
unset (``None``) does not enter the key, so adding an optional setting leaves finished run
folders valid; likewise a field added to a table later (:data:`ADDED_FIELDS`) stays out of
the key while it holds its default.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from llmhni_local.core.errors import ConfigError
from llmhni_local.core.io import sha256_file, sha256_text
from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
from llmhni_local.engine.settings import EMBEDDER_ADDED, RaterSettings
from llmhni_local.judgments.plan import RateSettings
from llmhni_local.judgments.run import checked_rater_id
from llmhni_local.stages.settings import RunConfig
from llmhni_local.text.embed import embedder_model_id
from llmhni_local.text.profiles import ProfileSettings
from llmhni_local.verdicts.rules import VerdictSettings

#: Fields added to a table after run folders were keyed, with their defaults: at its default
#: a field stays out of its table's value in the key, so those folders' stages stay reused.
ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "verdicts": {f: getattr(VerdictSettings(), f)
                 for f in ("file", "source", "keep_held_out", "skip_unknown")},
    "rate": {f: getattr(RateSettings(), f) for f in ("file", "source", "skip_unknown")},
    "profiles": {f: getattr(ProfileSettings(), f) for f in ("shuffle_share", "shuffle_seed")},
    "embedder": EMBEDDER_ADDED}  # also left out of text/embed.py's embed_key


def _keyed(path: str, value: Any) -> Any:
    added = ADDED_FIELDS.get(path)
    if not added or not isinstance(value, Mapping):
        return value
    return {k: v for k, v in value.items() if k not in added or v != added[k]}


def stage_key(stage: str, settings: Mapping[str, Any], upstream: Mapping[str, str],
              content: str = "") -> str:
    """The key of ``stage``.

    Args:
        stage: the stage's name.
        settings: ``{dotted path: value}`` of the settings it reads (tables as plain dicts).
        upstream: ``{stage: key}`` of the stages it reads from.
        content: what it reads beyond settings (:func:`content_hash`).

    >>> a = stage_key("rate", {"rate": {"batch_size": 8}, "pipeline.simulated_auc": None},
    ...               {"candidates": "c1"})
    >>> a == stage_key("rate", {"rate": {"batch_size": 8}}, {"candidates": "c1"})
    True
    >>> a == stage_key("rate", {"rate": {"batch_size": 8}}, {"candidates": "c2"})
    False
    """
    payload = {"stage": stage,
               "settings": {k: _keyed(k, v) for k, v in settings.items() if v is not None},
               "upstream": dict(upstream), "content": content}
    return sha256_text(json.dumps(payload, sort_keys=True, default=str))


def content_hash(cfg: RunConfig, stage: str, *, data_sources: Any, rater: RaterSettings) -> str:
    """What ``stage`` reads that its settings do not name, as one string ('' for nothing).

    Args:
        cfg: the run's settings.
        stage: the stage.
        data_sources: the data's source files with their hashes (``Interactions.sources``).
        rater: the rater the rate stage uses (``Run.rater``: with a tuned run, the tune
            stage's probe as its adapter, so this is asked only once that stage has run).
    """
    if stage == "data":
        return sha256_text(json.dumps(data_sources, sort_keys=True))
    if stage == "profiles" and cfg.profiles.summarize:  # summaries depend on the rater model
        return "summarized-by:" + ":".join(checked_rater_id(cfg.rater, mode=cfg.rate.mode))
    if stage == "embed":
        return embedder_model_id(cfg.embedder)
    if stage == "tune" and cfg.tune.kind != "none":
        # the probe reads the base model's states on the rating prompts
        hashes = [t.hash for t in load_templates(tuple(VIEW_TEMPLATES.values())).values()]
        return ":".join([checked_rater_id(cfg.rater, mode=cfg.rate.mode)[0], *hashes])
    if stage == "verdicts" and cfg.verdicts.file is not None:  # a new file is new verdicts
        try:
            return "imported:" + sha256_file(cfg.verdicts.file)
        except OSError as exc:
            raise ConfigError(f"verdicts.file: {cfg.verdicts.file}: {exc.strerror}") from None
    if stage == "rate" and cfg.rate.file is not None:  # a new file is new judgments
        try:
            return "imported:" + sha256_file(cfg.rate.file)
        except OSError as exc:
            raise ConfigError(f"rate.file: {cfg.rate.file}: {exc.strerror}") from None
    if stage == "rate" and cfg.verdicts.file is None and (cfg.pipeline.rater == "llm"
                                                          or cfg.tune.kind != "none"):
        return ":".join(checked_rater_id(rater, mode=cfg.rate.mode))
    return ""
