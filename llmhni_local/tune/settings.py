"""Settings of the ``tune`` stage: tuning the rater inside a run (docs/DESIGN.md, "Tuning the
rater inside a run")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmhni_local.core.errors import ConfigError

#: What the simulated labels of ``tune.kind = "probe"`` need per class: the probe's default
#: 5-fold cross-validation wants five of each of three labels.
MIN_TUNE_LABELS = 15


@dataclass(frozen=True)
class TuneSettings:
    """Tuning the rater inside a run: the ``tune`` stage, between ``candidates`` and ``rate``
    (docs/DESIGN.md, "Tuning the rater inside a run").

    Args:
        kind: ``none``: the stage does nothing and ``[rater]`` rates as configured. ``probe``:
            a probe head (what ``finetune-rater --kind probe`` fits, with the default ``[probe]``
            settings, on ``rater.model``) is fitted on ``labels`` SIMULATED audit labels into
            ``RUN/tune/probe/``, and the rate stage rates with that folder as ``rater.adapter``
            (so ``rater.adapter`` must be unset). The labels are read off the data's explicit
            ratings (>= 4 High, 3 Medium, <= 2 Low) of training pairs that are NOT candidates,
            so the tuned rater never judges a pair it was fitted on; data without ratings
            cannot be tuned this way. (default: ``"none"``)
        labels: simulated labels drawn (fewer when fewer such training pairs exist); at least
            15, five per class for the probe's cross-validation. (default: ``500``)
        seed: seed of the draw of labelled pairs. (default: ``0``)
    """

    kind: Literal["none", "probe"] = "none"
    labels: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("none", "probe"):
            raise ConfigError(f"tune.kind must be none or probe, got {self.kind!r}")
        if self.labels < MIN_TUNE_LABELS:
            raise ConfigError(f"tune.labels must be >= {MIN_TUNE_LABELS} (five per class for "
                              f"the probe's 5-fold cross-validation), got {self.labels}")
