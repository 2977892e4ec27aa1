"""What ``rater assess`` draws and computes, and the names of what it writes."""

from __future__ import annotations

from dataclasses import dataclass

from llmhni_local.core.errors import ConfigError
from llmhni_local.verdicts.rules import VerdictSettings

ASSESS_DIR = "assess"
REPORT_FILE = "assess.json"
PLOT_FILE = "assess.png"
SAMPLE_FILE = "sample.parquet"
#: Fewest pairs of a class the figures are computed on.
MIN_PER_CLASS = 20
#: A view whose most frequent label takes at least this share of its answered judgments is
#: constant: ``verdicts.constant_share``'s default (the command passes the run's setting).
CONSTANT_SHARE = VerdictSettings.constant_share
CONSTANT_TEXT = "constant: its verdicts carry no information"
CLASSES: tuple[str, ...] = ("clean", "noisy", "synthetic")
SCORE_TEXT = ("log P(High) - log(P(Medium) + P(Low)) of the stored label probabilities (no "
              "calibration), or the judgment's own score; AUCs rank by minus it (noise score)")
#: Tables of the run's recorded settings (``RUN/manifest.json``) the assessment starts from.
RUN_TABLES: tuple[str, ...] = ("data", "rater", "rate", "tune", "verdicts")
TUNE_PROBE_PAIRS = "tune/probe/pairs.json"


@dataclass(frozen=True)
class AssessSettings:
    """What ``rater assess`` draws and computes.

    Args:
        sample: pairs per class (clean, noisy, synthetic); a class with fewer pairs available
            takes them all. 200 (600 pairs, 1,200 judgments) keeps the command within 10
            minutes on 2 cores with SmolLM2-135M. (default: ``200``)
        users: held-out users drawn, whose pairs make the sample. (default: ``150``)
        seed: seed of the users, the pairs and the cross-fitting folds. (default: ``0``)
        folds: folds of the cross-fitted AUCs, grouped by user. (default: ``5``)
        constant_share: a view whose most frequent label takes at least this share of its
            judgments is named constant first. (default: ``0.95``)
        target_share: share of pairs each view calls High when the threshold rule's taus
            are set by share (``verdicts.target_share``'s default; the command passes the
            run's setting). (default: ``0.8``)
        coverages: coverages of the run's noise whose rating time is estimated.
            (default: ``(0.2, 0.5, 0.8)``)
    """

    sample: int = 200
    users: int = 150
    seed: int = 0
    folds: int = 5
    constant_share: float = CONSTANT_SHARE
    target_share: float = VerdictSettings.target_share
    coverages: tuple[float, ...] = (0.2, 0.5, 0.8)

    def __post_init__(self) -> None:
        if self.sample < MIN_PER_CLASS:
            raise ConfigError(f"rater assess: --sample {self.sample} pairs per class is below "
                              f"the {MIN_PER_CLASS} the figures need")
        if self.users < 2:
            raise ConfigError(f"rater assess: --users {self.users}: folds grouped by user need "
                              "at least 2 users")
        if self.folds < 2:
            raise ConfigError(f"rater assess: folds must be >= 2, got {self.folds}")
        if not 0.0 < self.constant_share <= 1.0:
            raise ConfigError(f"rater assess: constant_share must be in (0, 1], got "
                              f"{self.constant_share}")
        if not 0.0 < self.target_share <= 1.0:
            raise ConfigError(f"rater assess: target_share must be in (0, 1], got "
                              f"{self.target_share}")
        if not all(0.0 < c <= 1.0 for c in self.coverages):
            raise ConfigError(f"rater assess: coverages must be in (0, 1], got "
                              f"{list(self.coverages)}")
