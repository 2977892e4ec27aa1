"""A small rated data set as files and a run folder with its profiles, for the import tests
(handed out as fixtures by tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmhni_local.core.config import DataSettings


def files_data(folder: Path, users: int = 12, items: int = 20) -> str:
    """A small rated data set as files (items with text, so profiles can be built)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    rows = [f"u{u},m{i},{rng.integers(1, 6)}" for u in range(users)
            for i in rng.choice(items, 10, replace=False)]
    (folder / "interactions.csv").write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    (folder / "items.csv").write_text("id,text\n" + "".join(f"m{i},Film number {i}\n"
                                                            for i in range(items)))
    return f"files:{folder}"


def profiled_run(tmp_path: Path):
    """``(RUN, data)``: the profiles of :func:`files_data` built into ``tmp_path/run``."""
    from llmhni_local.data import load_data
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.stages.profiles import build_profiles
    from llmhni_local.text.profiles import ProfileSettings

    ds = DataSettings(source=files_data(tmp_path / "data"))
    d = load_data(ds)
    run = tmp_path / "run"
    build_profiles(run, d, data_settings=ds, settings=ProfileSettings(), rater=RaterSettings())
    return run, d
