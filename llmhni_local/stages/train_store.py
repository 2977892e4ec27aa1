"""Finished train runs kept by key, so a setting that comes back is copied, not retrained.

Every finished (method, seed) run is also copied to ``RUN/train_store/<key>/``; the key
(:func:`method_key`) holds everything the run depends on. The copy goes through a temporary
sibling and the key file is written last, so an interrupted copy never looks finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhni_local.core.io import sha256_text
from llmhni_local.stages.context import setting
from llmhni_local.stages.methods import METHOD_TABLE
from llmhni_local.train.run import PER_USER_FILE

if TYPE_CHECKING:
    from llmhni_local.stages.context import Run


def method_key(run: Run, method: str, seed: int) -> str:
    """What one (method, seed) training run depends on: a run whose folder records the same
    key is reused, so cells of a benchmark that share a data set and settings share their
    baselines (only the methods that read the verdicts or the profile embeddings add those
    stages' keys)."""
    payload: dict[str, Any] = {"method": method, "seed": seed, "data": run.keys["data"],
                               "rec_pre": run.keys["rec_pre"],
                               "settings": {s: setting(run.cfg, s) for s in ("model", "train", "eval")}}
    spec = METHOD_TABLE[method]
    if spec.settings:  # "llmhni" or "baselines" (a method's own table under it)
        payload[spec.settings.split(".")[0]] = setting(run.cfg, spec.settings)
    if spec.reads_verdicts:
        payload["verdicts"] = run.keys["verdicts"]
    if spec.reads_profiles:
        payload["align"] = run.keys["align"]
    return sha256_text(json.dumps(payload, sort_keys=True, default=str))


METHOD_KEY_FILE = "method_key.txt"


TRAIN_STORE = "train_store"


def finished(folder: Path, mkey: str) -> bool:
    """``folder`` holds a finished train run whose key is ``mkey``."""
    done = [folder / f for f in (METHOD_KEY_FILE, "metrics.json", PER_USER_FILE)]
    return all(p.is_file() for p in done) and done[0].read_text() == mkey


def replace_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary sibling, so an interrupted copy never
    leaves a ``dst`` that looks finished."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
