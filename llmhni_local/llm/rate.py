"""Dual rating of the candidate pairs (stage 6; docs/DESIGN.md, "LLM layer"), resumable.

For every candidate pair not yet in the judgment store, two prompts are built from
``prompts/``: the user-centric view (user profile, then the item) and the item-centric view (up
to ``max_liked`` of the user's liked training items, the candidate itself left out, then the
item). They go to the rating backend in large batches ordered so that one user's prompts are
adjacent (user-centric ones, then item-centric ones), which lets vLLM's prefix cache reuse the
user's part. Each batch is stored in one transaction, so killing the process loses at most the
batch in flight, and a rerun rates exactly what is missing.

The label is read at the answer position right after the template's answer cue and chosen by
likelihood (``rater.decide``; docs/DESIGN.md, "Reading the answer at the label"); a choice whose
label mass is below ``min_label_mass`` is stored as a failure (NULL label, raw text kept), as is
an answer that is not a label under ``decide = "parse"``; neither is ever given a label. Once at
least ``min_judgments`` answers of this model and prompt are stored, a failure share above
``max_failure_share`` stops the run with a :class:`~llmhni_local.errors.UserError`.

The prompt hash a row is stored under covers what makes the prompt and its stored label: the
view's template, the profiles (their sha256), for the item-centric view ``max_liked``, and
``min_label_mass``. Changing any of them makes a fresh set of rows; the old ones stay in the
store.

Each call reports (``RateReport.as_dict`` and ``rating.json``) the dtype the rater chose and
why, the prompt tokens, those served from vLLM's prefix cache, their share, and the unique
(computed) prompt tokens per judgment.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from llmhni_local.errors import ConfigError, UserError
from llmhni_local.llm.base import RatingBackend
from llmhni_local.llm.prompts import VIEW_TEMPLATES, Template
from llmhni_local.llm.store import VIEWS, Key
from llmhni_local.progress import progress_bar

CANDIDATES_FILE = "candidates.parquet"
RATING_MANIFEST = "rating.json"
NO_LIKED = "(none)"


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
            same store exactly once; ``llm/ray_job.py``, README "Rating on a cluster").
            (default: ``"inprocess"``)
        ray_address: the Ray cluster for ``engine = "ray"`` (``host:port``,
            ``ray://host:port`` or ``auto``); ``None`` takes ``RAY_ADDRESS`` and, without it,
            starts a local cluster on this machine's CPUs. (default: ``None``)
    """

    batch_size: int = 256
    max_liked: int = 10
    max_failure_share: float = 0.2
    min_judgments: int = 64
    min_label_mass: float = 0.05
    engine: Literal["inprocess", "ray"] = "inprocess"
    ray_address: str | None = None

    def __post_init__(self) -> None:
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


def prompt_hashes(templates: dict[str, Template], profiles_hash: str,
                  max_liked: int, min_label_mass: float | None = None) -> dict[str, str]:
    """The prompt hash of each view (template, profiles, item-centric L, the label-mass floor;
    ``None``, as before the floor existed, leaves it out)."""
    from llmhni_local.io import sha256_text

    out = {}
    for view in VIEWS:
        tpl = templates[VIEW_TEMPLATES[view]]
        parts: dict[str, Any] = {"template": tpl.hash, "profiles": profiles_hash}
        if view == "item":
            parts["max_liked"] = max_liked
        if min_label_mass is not None:
            parts["min_label_mass"] = float(min_label_mass)
        out[view] = sha256_text(json.dumps(parts, sort_keys=True))
    return out


def plan(candidates: np.ndarray, todo: dict[str, set[tuple[int, int]]]) -> list[tuple]:
    """Work items ``(user, item, view, kind)``: per user, the user-centric prompts, then the
    item-centric ones (each in candidate order), users in ascending order."""
    order = np.argsort(candidates["user"], kind="stable")
    work: list[tuple] = []
    users = candidates["user"][order]
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True]) if len(users) else []
    for s, e in zip(bounds[:-1], bounds[1:]):
        rows = candidates[order[s:e]]
        for view in VIEWS:
            work.extend((int(r["user"]), int(r["item"]), view, str(r["kind"])) for r in rows
                        if (int(r["user"]), int(r["item"])) in todo[view])
    return work


# ---------------------------------------------------------------------------- the stage
def rate_candidates(run_dir: str | Path, make_backend: Callable[[], RatingBackend], *,
                    model_id: str, adapter: str = "", settings: RateSettings | None = None,
                    prompts_dir: str | Path | None = None, progress: bool = True,
                    on_batch: Callable[[int], None] | None = None) -> RateReport:
    """Rate every candidate pair of ``RUN`` in both views, skipping what is stored.

    Args:
        run_dir: run folder with ``profiles/`` and ``candidates.parquet``; the judgment store
            ``judgments.sqlite`` is written there.
        make_backend: builds the rating backend; called only when something is left to rate.
        model_id: the id rows are stored under (known before the engine starts, from the
            registry); the backend's own ``model_id`` must match it.
        adapter: adapter id, '' for none.
        settings: batch size, L, failure threshold.
        prompts_dir: folder of the templates (default ``prompts/``).
        progress: show a progress bar.
        on_batch: called with the batch number after each batch is stored (tests).
    """
    from llmhni_local.io import write_json
    from llmhni_local.llm.store import JudgmentStore

    settings = settings or RateSettings()
    run_dir = Path(run_dir)
    templates, profiles, candidates = _load_inputs(run_dir, prompts_dir)
    hashes = prompt_hashes(templates, profiles.hash, settings.max_liked, settings.min_label_mass)
    keys = {v: Key(model_id, adapter or "", hashes[v]) for v in VIEWS}
    report = RateReport(keys=keys)

    manifest = _manifest(model_id, adapter, profiles.hash, hashes, templates, settings,
                         len(candidates))
    store = JudgmentStore(run_dir)
    try:
        pairs = [(int(u), int(i)) for u, i in zip(candidates["user"], candidates["item"])]
        todo = {v: set(store.missing(pairs, v, keys[v])) for v in VIEWS}
        work = plan(candidates, todo)
        report.skipped = 2 * len(pairs) - len(work)
        n_seen, n_bad = 0, 0
        for v in VIEWS:
            n, bad = store.counts(keys[v])
            n_seen, n_bad = n_seen + n, n_bad + bad
        write_json(run_dir / RATING_MANIFEST, {**manifest, "status": "running"})
        if not work:
            write_json(run_dir / RATING_MANIFEST, {**manifest, "status": "done",
                                                   "stored": n_seen, "failures": n_bad})
            return report

        # A model and prompt that already failed too often would fail again: stop before the
        # engine starts (raise rate.max_failure_share to go on anyway).
        _check_failures(n_seen, n_bad, settings, run_dir, manifest)
        if settings.engine == "ray":  # the same work list, as a Ray Data job (llm/ray_job.py)
            from llmhni_local.llm.ray_job import rate_on_ray

            return rate_on_ray(run_dir, store, work, make_backend, profiles=profiles,
                               templates=templates, keys=keys, settings=settings, report=report,
                               manifest=manifest, seen=(n_seen, n_bad), progress=progress,
                               on_batch=on_batch)
        start = time.perf_counter()
        backend = make_backend()
        report.engine_started = True
        try:
            got = getattr(backend, "model_id", model_id)
            if got != model_id:
                raise UserError(f"the rating backend reports model id {got!r} but the run "
                                f"expected {model_id!r}")
            report.dtype = getattr(backend, "dtype_choice", None)
            manifest["dtype"] = report.dtype
            job = _Job(store, keys, settings, run_dir, manifest, [n_seen, n_bad], on_batch)
            _rate_work(backend, work, profiles, templates, job, report, progress)
        finally:
            report.seconds = time.perf_counter() - start
            backend.close()
        write_json(run_dir / RATING_MANIFEST, {**manifest, "status": "done",
                                               "stored": job.counts[0], "failures": job.counts[1],
                                               "last_call": report.as_dict()})
        return report
    finally:
        store.close()


def _load_inputs(run_dir: Path, prompts_dir: str | Path | None):
    """Templates, profiles and candidates of ``RUN``, checked before any engine starts."""
    from llmhni_local.llm.profiles import load_profiles
    from llmhni_local.llm.prompts import load_templates
    from llmhni_local.method.candidates import load_candidates

    templates = load_templates(tuple(VIEW_TEMPLATES.values()), prompts_dir)
    profiles = load_profiles(run_dir)
    candidates = load_candidates(run_dir / CANDIDATES_FILE)
    if len(candidates) and (candidates["user"].max() >= len(profiles.users)
                            or candidates["item"].max() >= len(profiles.items)):
        raise UserError(f"{run_dir / CANDIDATES_FILE}: candidates name users or items the "
                        "profiles do not have (built from other data?)")
    return templates, profiles, candidates


def _manifest(model_id: str, adapter: str, profiles_hash: str, hashes: dict[str, str],
              templates: dict[str, Template], settings: RateSettings,
              n_candidates: int) -> dict[str, Any]:
    """What ``rating.json`` records before the engine starts (dtype and figures come later)."""
    return {
        "model_id": model_id, "adapter": adapter or "", "profiles_hash": profiles_hash,
        "views": {v: {"prompt_hash": hashes[v], "template": VIEW_TEMPLATES[v],
                      "template_version": templates[VIEW_TEMPLATES[v]].version,
                      "template_hash": templates[VIEW_TEMPLATES[v]].hash,
                      "answer_cue": templates[VIEW_TEMPLATES[v]].cue} for v in VIEWS},
        "settings": _asdict(settings),
        "candidates": int(n_candidates),
    }


@dataclass
class _Job:
    """Where one rating call writes, and what it checks after every batch."""

    store: Any
    keys: dict[str, Key]
    settings: RateSettings
    run_dir: Path
    manifest: dict[str, Any]
    counts: list[int]  # [answers stored for these keys, of which failures]
    on_batch: Callable[[int], None] | None = None


def _rate_work(backend: RatingBackend, work: list[tuple], profiles,
               templates: dict[str, Template], job: _Job, report: RateReport,
               progress: bool) -> None:
    """Rate ``work`` in batches with one backend, one stored transaction per batch."""
    settings = job.settings
    stats0 = dict(getattr(backend, "token_stats", None) or {})
    with progress_bar("rating", len(work), enabled=progress, fields=("failures",)) as bar:
        for b0 in range(0, len(work), settings.batch_size):
            batch = work[b0:b0 + settings.batch_size]
            prompts = [view_messages(v, u, i, profiles, templates[VIEW_TEMPLATES[v]],
                                     settings.max_liked) for u, i, v, _ in batch]
            judgments = backend.rate(prompts)
            if len(judgments) != len(prompts):
                raise UserError(f"the rating backend returned {len(judgments)} answers "
                                f"for {len(prompts)} prompts")
            judgments, low = apply_mass_floor(judgments, settings.min_label_mass)
            bad = _store_batch(job, batch, judgments)
            report.batches += 1
            report.rated += len(batch)
            report.failures += bad
            report.low_mass += low
            _count_tokens(backend, stats0, report)
            job.counts[0] += len(batch)
            job.counts[1] += bad
            bar.advance(len(batch), failures=job.counts[1])
            if job.on_batch is not None:
                job.on_batch(report.batches)
            _check_failures(job.counts[0], job.counts[1], settings, job.run_dir, job.manifest)


def _store_batch(job: _Job, batch: list[tuple], judgments: list) -> int:
    """Store one batch (both views) in one transaction; returns its failures."""
    from llmhni_local.llm.store import make_rows

    rows: list[tuple] = []
    bad = 0
    for v in VIEWS:
        idx = [k for k, w in enumerate(batch) if w[2] == v]
        if idx:
            r, f = make_rows(v, job.keys[v], [(batch[k][0], batch[k][1], batch[k][3])
                                              for k in idx], [judgments[k] for k in idx])
            rows += r
            bad += f
    job.store.add_rows(rows)  # one transaction per batch
    return bad


def _count_tokens(backend: Any, stats0: dict[str, int], report: RateReport) -> None:
    """Prompt and prefix-cache tokens of this call, from the backend's running counts."""
    stats = getattr(backend, "token_stats", None)
    if not stats:
        return
    report.prompt_tokens = int(stats.get("prompt_tokens", 0) - stats0.get("prompt_tokens", 0))
    if getattr(backend, "cached_known", False):
        report.cached_tokens = int(stats.get("cached_tokens", 0)
                                   - stats0.get("cached_tokens", 0))


def apply_mass_floor(judgments: list, floor: float) -> tuple[list, int]:
    """Likelihood choices whose label mass is below ``floor`` become failures (label None,
    text, probabilities and mass kept); returns the judgments and how many were failed."""
    import dataclasses

    out, low = [], 0
    for j in judgments:
        if (getattr(j, "decided_by", "parse") == "likelihood" and j.label is not None
                and (j.label_mass is None or j.label_mass < floor)):
            j = dataclasses.replace(j, label=None)
            low += 1
        out.append(j)
    return out, low


def rater_model_id(settings, prompts_dir: str | Path | None = None) -> tuple[str, str]:
    """``(model_id, adapter)`` that rows of this rater are stored under, known before its
    engine starts: the same id the backend reports (registry name plus content hashes of the
    model and adapter, ``+parse`` for ``rater.decide = "parse"``) and the adapter folder's
    name ('' for none). Use it wherever :func:`rate_candidates` is called, so every entry
    point stores under the same key.

    It also checks, with the model's tokenizer, that every label follows the answer cue of the
    rating templates in ``prompts_dir`` as one distinct token (a :class:`UserError` naming the
    template file and the token pieces otherwise), so a bad cue stops before any engine."""
    from llmhni_local.llm.backends.common import rater_id
    from llmhni_local.llm.registry import RATER_NEEDS, check_adapter, model_id, resolve_checked

    spec = resolve_checked(settings.model, RATER_NEEDS)
    adapter = check_adapter(settings.adapter) if settings.adapter else None
    check_label_tokens(spec.path, prompts_dir)
    return (rater_id(model_id(spec, adapter), getattr(settings, "decide", "likelihood")),
            (adapter.name if adapter else ""))


def check_label_tokens(model_path: str | Path, prompts_dir: str | Path | None = None
                       ) -> dict[str, dict[str, int]]:
    """Label token ids per answer cue of the rating templates for this model's tokenizer
    (``labels.template_label_ids``); raises a :class:`UserError` naming the template file."""
    from llmhni_local.llm.prompts import load_templates

    templates = load_templates(tuple(VIEW_TEMPLATES.values()), prompts_dir)
    key = tuple(sorted((str(t.path), t.hash) for t in templates.values()))
    return _label_tokens(str(model_path), key)


@functools.lru_cache(maxsize=8)
def _label_tokens(model_path: str, key: tuple) -> dict[str, dict[str, int]]:
    from llmhni_local.llm.chat import load_tokenizer
    from llmhni_local.llm.labels import template_label_ids
    from llmhni_local.llm.prompts import load_template

    templates = [load_template(Path(path).stem, Path(path).parent) for path, _ in key]
    return template_label_ids(load_tokenizer(model_path), templates)


def _check_failures(n_seen: int, n_bad: int, settings: RateSettings, run_dir: Path,
                    manifest: dict[str, Any]) -> None:
    from llmhni_local.io import write_json

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


def _asdict(settings: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(settings)
