"""One pipeline run as the stages see it: settings, folder, data, stage keys and records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from llmhni_local.core.config import to_dict
from llmhni_local.data import load_data
from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.stages.key import content_hash, stage_key
from llmhni_local.stages.plan import TUNE_PROBE_DIR, reads
from llmhni_local.stages.settings import RunConfig


def setting(cfg: RunConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return to_dict(node) if dataclasses.is_dataclass(node) else node


class Run:
    """One pipeline run: its settings, folder, stage records and shared state."""

    def __init__(self, cfg: RunConfig, *, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.pipeline.out)
        self.progress = progress
        self.log = log
        self.keys: dict[str, str] = {}
        self.ran: dict[str, bool] = {}
        self._data: Interactions | None = None
        self.content: dict[str, str] = {}  # per stage, what its key read beyond settings

    @property
    def data(self) -> Interactions:
        if self._data is None:
            self._data = load_data(self.cfg.data)
        return self._data

    def key(self, stage: str, content: str | None = None) -> str:
        """The key of ``stage`` now (:func:`llmhni_local.stages.key.stage_key`); the stages it
        reads from must have been keyed first. ``content`` is what it reads beyond settings
        (default: :func:`~llmhni_local.stages.key.content_hash`), kept in :attr:`content`
        (the manifest names the models by it)."""
        settings, upstream = reads(self.cfg, stage)
        if content is None:
            content = content_hash(self.cfg, stage, data_sources=self.data.sources,
                                   rater=self.rater)
        self.content[stage] = content
        return stage_key(stage, {s: setting(self.cfg, s) for s in settings},
                         {u: self.keys[u] for u in upstream}, content)

    @property
    def rater(self) -> RaterSettings:
        """The rater the rate stage uses: ``[rater]``, with the tune stage's probe as its
        adapter when ``tune.kind = "probe"``."""
        if self.cfg.tune.kind == "probe":
            return dataclasses.replace(self.cfg.rater, adapter=str(self.dir / TUNE_PROBE_DIR))
        return self.cfg.rater

    def record_path(self, stage: str) -> Path:
        return self.dir / "stages" / f"{stage}.json"

    def record(self, stage: str) -> dict | None:
        p = self.record_path(stage)
        return json.loads(p.read_text()) if p.is_file() else None
