"""Where the files that ship with the toolkit lie: prompt templates and default configs.

In a checkout they are the folders ``prompts/`` and ``configs/`` at the top of the repository
(edit them there). An installed wheel carries the same files as ``llmhni_local/_prompts`` and
``llmhni_local/_configs`` (``setup.py`` maps those package names onto the two folders), found
through :mod:`importlib.resources`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

Shipped = Literal["prompts", "configs"]


def shipped_dir(kind: Shipped) -> Path:
    """The folder of ``kind``: the checkout's when running from one, else the installed copy."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / kind).is_dir():
        return checkout / kind

    return Path(str(files("llmhni_local") / f"_{kind}"))
