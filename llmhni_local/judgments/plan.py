"""What a rating run asks and how its answers are judged, shared by every rating engine.

The settings (:class:`RateSettings`), the work items (:class:`WorkItem`) and the order they
are done in, the two views' prompts and the judge requests made of them, the prompt hashes
rows are stored under, the label-mass floor, the store rows of a rated batch
(:func:`batch_rows`) and the failure limit. Both engines
(:func:`llmhni_local.judgments.run.rate_candidates` in this process and
:mod:`llmhni_local.judgments.ray_job` on Ray) read them from here, so neither reaches into the
other.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.core.io import sha256_text, write_json
from llmhni_local.engine.api import JudgeRequest, Judgment
from llmhni_local.engine.prompts import VIEW_TEMPLATES, Template
from llmhni_local.judgments.store import VIEWS, JudgmentStore, Key, make_rows, source_problem

RATING_MANIFEST = "rating.json"


NO_LIKED = "(none)"


@dataclass(frozen=True)
class WorkItem:
    """One view of one candidate pair to rate.

    Args:
        user: the user's index.
        item: the item's index.
        view: ``"user"`` or ``"item"``.
        kind: the candidate's kind (``"observed"`` or ``"unobserved"``), stored with the row.
    """

    user: int
    item: int
    view: str
    kind: str


@dataclass(frozen=True)
class RateSettings:
    """The rating stage.

    Args:
        batch_size: prompts sent to the backend per call and stored per transaction; larger
            batches keep vLLM busier, smaller ones lose less when killed. (default: ``256``)
        max_liked: L, the most liked items listed in the item-centric prompt. (default: ``10``)
        max_failure_share: stop when more than this share of the stored answers (of this model
            and prompt) are not labels. (default: ``0.2``)
        min_judgments: the failure share is checked only once this many answers are stored,
            so that a few early failures do not stop a run. (default: ``64``)
        min_label_mass: the least probability a likelihood-chosen judgment must put on the
            label tokens together at the answer position; below it the model was not answering
            with a label at all and the judgment is a counted failure (label NULL), never a
            label. SmolLM2-135M-Instruct put 0.29-0.70 on the labels after the
            ``Relevance:`` cue (median 0.49) on 128 ML-100K prompts, so 0.05 only catches
            answers that go elsewhere altogether (docs/DESIGN.md, "Reading the answer at the
            label"). (default: ``0.05``)
        engine: where the missing judgments are rated: ``inprocess`` (one backend in this
            process) or ``ray`` (a Ray Data job, one backend per worker, rows merged into the
            same store exactly once; ``judgments/ray_job.py``, docs/RAY.md).
            (default: ``"inprocess"``)
        ray_address: the Ray cluster for ``engine = "ray"`` (``host:port``,
            ``ray://host:port`` or ``auto``); ``None`` takes ``RAY_ADDRESS`` and, without it,
            starts a local cluster on this machine's CPUs. (default: ``None``)
        mode: how each view is read: ``judge`` (the model answers High / Medium / Low after
            the rating prompt; labels and their probabilities are stored) or ``likelihood``
            (no instruction: the score ``log p(name | view context) - log p(name | neutral
            context)`` of ``prompts/likelihood.toml`` is stored, and the verdict rule must be
            a threshold; :mod:`llmhni_local.judgments.likelihood`, docs/DESIGN.md, "The likelihood
            reader"). (default: ``"judge"``)
        file: judgments made elsewhere (CSV, TSV, Parquet or JSON Lines of ``user``,
            ``item``, ``view`` and ``label`` and/or ``score``, in the data's raw ids;
            docs/IMPORTING.md, "Judgments from elsewhere"). When set, the rate stage imports
            the file into the judgment store under ``source`` instead of rating (no rater
            model is needed), and the verdicts stage decides from those judgments, over the
            pairs the file names. (default: ``None``)
        source: where the file's judgments were made (a rater, a lab): the name they are
            stored and recorded under; letters, digits, ``.``, ``-``, ``_``; required with
            ``file``. (default: ``None``)
        skip_unknown: with ``file``, drop rows whose user or item id is not in the data
            (counted by reason) instead of refusing the file. (default: ``False``)
    """

    batch_size: int = 256
    max_liked: int = 10
    max_failure_share: float = 0.2
    min_judgments: int = 64
    min_label_mass: float = 0.05
    engine: Literal["inprocess", "ray"] = "inprocess"
    ray_address: str | None = None
    mode: Literal["judge", "likelihood"] = "judge"
    file: str | None = None
    source: str | None = None
    skip_unknown: bool = False

    def __post_init__(self) -> None:
        if self.file is not None:
            if not Path(self.file).is_file():
                raise ConfigError(f"rate.file: {self.file}: no such file")
            problem = source_problem(self.source)
            if problem is not None:
                raise ConfigError(f"rate.source (where the judgments of rate.file {self.file} "
                                  f"were made): {problem}")
        elif self.source is not None:
            raise ConfigError(f"rate.source ({self.source!r}) names where the judgments of "
                              "rate.file were made; set rate.file too")
        if self.batch_size <= 0:
            raise ConfigError(f"rate.batch_size must be > 0, got {self.batch_size}")
        if self.max_liked < 0:
            raise ConfigError(f"rate.max_liked must be >= 0, got {self.max_liked}")
        if not 0.0 <= self.max_failure_share <= 1.0:
            raise ConfigError(f"rate.max_failure_share must be in [0, 1], got "
                              f"{self.max_failure_share}")
        if self.min_judgments < 0:
            raise ConfigError(f"rate.min_judgments must be >= 0, got {self.min_judgments}")
        if not 0.0 <= self.min_label_mass < 1.0:
            raise ConfigError(f"rate.min_label_mass must be in [0, 1), got {self.min_label_mass}")
        if self.engine not in ("inprocess", "ray"):
            raise ConfigError(f"rate.engine must be inprocess or ray, got {self.engine!r}")
        if self.mode not in ("judge", "likelihood"):
            raise ConfigError(f"rate.mode must be judge or likelihood, got {self.mode!r}")
        if self.mode == "likelihood" and self.engine != "inprocess":
            raise ConfigError("rate.mode = 'likelihood' runs in this process (rate.engine = "
                              "'inprocess'); the Ray job reads judge answers only")


@dataclass
class RateReport:
    """What one call of :func:`rate_candidates` did."""

    rated: int = 0  # answers stored by this call
    failures: int = 0  # of which not a label (low label mass included)
    low_mass: int = 0  # of which a likelihood choice below rate.min_label_mass
    skipped: int = 0  # answers already stored before this call
    batches: int = 0
    seconds: float = 0.0
    engine_started: bool = False
    keys: dict[str, Key] = field(default_factory=dict)
    dtype: dict[str, str] | None = None  # requested, chosen, why (from the backend)
    prompt_tokens: int = 0  # prompt tokens sent to the backend
    cached_tokens: int | None = None  # of which served from the prefix cache (None: unknown)

    def as_dict(self) -> dict[str, Any]:
        cached = self.cached_tokens
        unique = self.prompt_tokens - (cached or 0)
        return {"rated": self.rated, "failures": self.failures, "low_mass": self.low_mass,
                "skipped": self.skipped, "batches": self.batches,
                "seconds": round(self.seconds, 3),
                "judgments_per_s": self.rated / self.seconds if self.seconds > 0 else None,
                "engine_started": self.engine_started, "dtype": self.dtype,
                "prompt_tokens": self.prompt_tokens, "cached_tokens": cached,
                "cached_share": (cached / self.prompt_tokens
                                 if cached is not None and self.prompt_tokens else None),
                "unique_tokens_per_judgment": (unique / self.rated
                                               if cached is not None and self.rated else None),
                "keys": {v: vars(k) for v, k in self.keys.items()}}


# ---------------------------------------------------------------------------- prompts
def liked_text(profiles, user: int, item: int, max_liked: int) -> str:
    """The item-centric view's list: up to L liked items of the user, without ``item``."""
    liked = [int(i) for i in profiles.liked[user] if int(i) != int(item)][:max_liked]
    if not liked:
        return NO_LIKED
    return "\n".join(f"- {profiles.item_names[i]}" for i in liked)


def view_messages(view: str, user: int, item: int, profiles, template: Template,
                  max_liked: int) -> list[dict[str, str]]:
    """Chat messages of one view of one pair."""
    if view == "user":
        values = {"user_profile": profiles.users[user], "item_profile": profiles.items[item]}
    elif view == "item":
        values = {"liked_items": liked_text(profiles, user, item, max_liked),
                  "item_profile": profiles.items[item]}
    else:
        raise ValueError(f"unknown view {view!r}")
    return template.messages(values)


def judge_requests(work: Sequence[WorkItem], profiles, templates: dict[str, Template],
                   max_liked: int) -> list[JudgeRequest]:
    """The judge request of each work item: its view's prompt, with its view and pair."""
    return [JudgeRequest(messages=view_messages(w.view, w.user, w.item, profiles,
                                                templates[VIEW_TEMPLATES[w.view]], max_liked),
                         view=w.view, user=w.user, item=w.item) for w in work]


def view_template(view: str, mode: str = "judge") -> str:
    """The template a view is read with: its rating template, or the likelihood reader's."""
    return "likelihood" if mode == "likelihood" else VIEW_TEMPLATES[view]


def prompt_hashes(templates: dict[str, Template], profiles_hash: str,
                  max_liked: int, min_label_mass: float | None = None,
                  mode: str = "judge") -> dict[str, str]:
    """The prompt hash of each view (template, profiles, item-centric L, the label-mass floor;
    ``None``, as before the floor existed, leaves it out). The likelihood reader's rows hash
    its template and the view, and no label-mass floor (it reads no label)."""
    out = {}
    for view in VIEWS:
        tpl = templates[view_template(view, mode)]
        parts: dict[str, Any] = {"template": tpl.hash, "profiles": profiles_hash}
        if mode == "likelihood":
            parts.update(reader="likelihood", view=view)
            min_label_mass = None
        if view == "item":
            parts["max_liked"] = max_liked
        if min_label_mass is not None:
            parts["min_label_mass"] = float(min_label_mass)
        out[view] = sha256_text(json.dumps(parts, sort_keys=True))
    return out


def plan(candidates: np.ndarray, todo: dict[str, set[tuple[int, int]]]) -> list[WorkItem]:
    """The work items: per user, the user-centric prompts, then the item-centric ones (each in
    candidate order), users in ascending order."""
    order = np.argsort(candidates["user"], kind="stable")
    work: list[WorkItem] = []
    users = candidates["user"][order]
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True]) if len(users) else []
    for s, e in zip(bounds[:-1], bounds[1:]):
        rows = candidates[order[s:e]]
        for view in VIEWS:
            work.extend(WorkItem(int(r["user"]), int(r["item"]), view, str(r["kind"]))
                        for r in rows if (int(r["user"]), int(r["item"])) in todo[view])
    return work


def batch_rows(batch: Sequence[WorkItem], judgments: Sequence[Judgment],
               keys: dict[str, Key]) -> tuple[list[tuple], int]:
    """The store rows of a rated batch (each view's rows under its key, the user-centric
    ones first) and how many are failures; what every rating engine stores."""
    if len(batch) != len(judgments):
        raise ValueError(f"{len(batch)} work items but {len(judgments)} judgments")
    rows: list[tuple] = []
    bad = 0
    for view in VIEWS:
        idx = [k for k, w in enumerate(batch) if w.view == view]
        if idx:
            r, f = make_rows(view, keys[view], [(batch[k].user, batch[k].item, batch[k].kind)
                                                for k in idx], [judgments[k] for k in idx])
            rows += r
            bad += f
    return rows, bad


def apply_mass_floor(judgments: list, floor: float) -> tuple[list, int]:
    """Likelihood choices whose label mass is below ``floor`` become failures (label None,
    text, probabilities and mass kept); returns the judgments and how many were failed."""
    out, low = [], 0
    for j in judgments:
        if (j.decided_by == "likelihood" and j.label is not None
                and (j.label_mass is None or j.label_mass < floor)):
            j = dataclasses.replace(j, label=None)
            low += 1
        out.append(j)
    return out, low


def check_failures(n_seen: int, n_bad: int, settings: RateSettings, run_dir: Path,
                    manifest: dict[str, Any]) -> None:
    if n_seen and n_seen >= settings.min_judgments and n_bad / n_seen > settings.max_failure_share:
        write_json(run_dir / RATING_MANIFEST, {**manifest, "status": "stopped: too many failures",
                                               "stored": n_seen, "failures": n_bad})
        raise UserError(
            f"rating stopped: {n_bad} of {n_seen} answers were not a label "
            f"({n_bad / n_seen:.0%} > rate.max_failure_share {settings.max_failure_share:g}); "
            f"see the raw answers with `judgments export {run_dir} --format csv`")


def run_max_liked(run_dir: str | Path, requested: int | None) -> int:
    """L for prompts built outside the rating stage (fine-tuning, probes): ``requested`` when
    set, else what the run's rating used (``rating.json``), else the default."""
    if requested is not None:
        return requested
    try:
        return int(read_rating_manifest(run_dir)["settings"]["max_liked"])
    except (UserError, KeyError):
        return RateSettings().max_liked


def read_rating_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RATING_MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: no rating manifest; run the `rate` stage first")
    return json.loads(path.read_text())


def last_rating(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(judgments, manifest)`` of ``run_dir``'s last rating run: the stored judgments of the
    model, adapter and view prompts that its ``rating.json`` names (a DataFrame, one row per
    pair and view), and that manifest."""
    manifest = read_rating_manifest(run_dir)
    keys = {v: Key(manifest["model_id"], manifest["adapter"], manifest["views"][v]["prompt_hash"])
            for v in VIEWS}
    with JudgmentStore(run_dir, create=False) as store:
        return store.frame(views=keys), manifest


