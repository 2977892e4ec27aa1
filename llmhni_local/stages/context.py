"""One pipeline run as the stages see it: settings, folder, stage keys and records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from llmhni_local.core.config import to_dict
from llmhni_local.core.io import sha256_text
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.pipeline.plan import reads
from llmhni_local.pipeline.settings import RunConfig
from llmhni_local.stages import TUNE_PROBE_DIR


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
        self._data = None
        self.extra_keys: dict[str, str] = {}  # content that keys depend on (data, models)

    # -------------------------------------------------------------- helpers
    @property
    def data(self):
        if self._data is None:
            from llmhni_local.data import load_data

            self._data = load_data(self.cfg.data)
        return self._data

    def key(self, stage: str) -> str:
        settings, upstream = reads(self.cfg, stage)
        payload = {"stage": stage, "settings": {s: setting(self.cfg, s) for s in settings},
                   "upstream": {u: self.keys[u] for u in upstream},
                   "extra": self.extra_keys.get(stage, "")}
        return sha256_text(json.dumps(payload, sort_keys=True, default=str))

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
