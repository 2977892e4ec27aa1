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
``max_failure_share`` stops the run with a :class:`~llmhni_local.core.errors.UserError`.

The prompt hash a row is stored under covers what makes the prompt and its stored label: the
view's template, the profiles (their sha256), for the item-centric view ``max_liked``, and
``min_label_mass``. Changing any of them makes a fresh set of rows; the old ones stay in the
store.

Each call reports (``RateReport.as_dict`` and ``rating.json``) the dtype the rater chose and
why, the prompt tokens, those served from vLLM's prefix cache, their share, and the unique
(computed) prompt tokens per judgment.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llmhni_local.backends.common import rater_id
from llmhni_local.core.errors import UserError
from llmhni_local.core.io import write_json
from llmhni_local.core.progress import progress_bar
from llmhni_local.engine.api import Judgment, Rater
from llmhni_local.engine.chat import load_tokenizer
from llmhni_local.engine.labels import template_label_sequences
from llmhni_local.engine.prompts import VIEW_TEMPLATES, Template, load_template, load_templates
from llmhni_local.judgments.likelihood import pmi_scores
from llmhni_local.judgments.plan import (
    RATING_MANIFEST,
    RateReport,
    RateSettings,
    WorkItem,
    apply_mass_floor,
    batch_rows,
    check_failures,
    judge_requests,
    plan,
    prompt_hashes,
    view_template,
)
from llmhni_local.judgments.ray_job import rate_on_ray
from llmhni_local.judgments.store import VIEWS, JudgmentStore, Key
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates
from llmhni_local.text.profiles import load_profiles
from llmhni_local.weights.adapters import check_adapter
from llmhni_local.weights.registry import READER_NEEDS, model_id, resolve_checked


# ---------------------------------------------------------------------------- the stage
def rate_candidates(run_dir: str | Path, make_backend: Callable[[], Rater], *,
                    model_id: str, adapter: str = "", settings: RateSettings | None = None,
                    prompts_dir: str | Path | None = None, progress: bool = True,
                    on_batch: Callable[[int], None] | None = None) -> RateReport:
    """Rate every candidate pair of ``RUN`` in both views, skipping what is stored.

    Args:
        run_dir: run folder with ``profiles/`` and ``candidates.parquet``; the judgment store
            ``judgments.sqlite`` is written there.
        make_backend: builds the rating backend (a :class:`~llmhni_local.engine.api.Rater`);
            called only when something is left to rate.
        model_id: the id rows are stored under (known before the engine starts, from the
            registry); the backend's own ``model_id`` must match it (unless it has none).
        adapter: adapter id, '' for none.
        settings: batch size, L, failure threshold.
        prompts_dir: folder of the templates (default ``prompts/``).
        progress: show a progress bar.
        on_batch: called with the batch number after each batch is stored (tests).
    """
    settings = settings or RateSettings()
    run_dir = Path(run_dir)
    templates, profiles, candidates = _load_inputs(run_dir, prompts_dir, settings.mode)
    hashes = prompt_hashes(templates, profiles.hash, settings.max_liked, settings.min_label_mass,
                           settings.mode)
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
        check_failures(n_seen, n_bad, settings, run_dir, manifest)
        if settings.engine == "ray":  # the same work list, as a Ray Data job (judgments/ray_job.py)
            return rate_on_ray(run_dir, store, work, make_backend, profiles=profiles,
                               templates=templates, keys=keys, settings=settings, report=report,
                               manifest=manifest, seen=(n_seen, n_bad), progress=progress,
                               on_batch=on_batch)
        start = time.perf_counter()
        backend = make_backend()
        report.engine_started = True
        try:
            got = backend.model_id
            if got and got != model_id:
                raise UserError(f"the rating backend reports model id {got!r} but the run "
                                f"expected {model_id!r}")
            report.dtype = backend.dtype_choice
            manifest["dtype"] = report.dtype
            # "system" or "folded" (a template without a system role; engine/chat.py)
            manifest["chat_form"] = backend.chat_form
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


def _load_inputs(run_dir: Path, prompts_dir: str | Path | None, mode: str = "judge"):
    """Templates, profiles and candidates of ``RUN``, checked before any engine starts."""
    names = ("likelihood",) if mode == "likelihood" else tuple(VIEW_TEMPLATES.values())
    templates = load_templates(names, prompts_dir)
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
        "views": {v: {"prompt_hash": hashes[v], "template": view_template(v, settings.mode),
                      "template_version": templates[view_template(v, settings.mode)].version,
                      "template_hash": templates[view_template(v, settings.mode)].hash,
                      "answer_cue": (templates[view_template(v, settings.mode)].cue
                                     if settings.mode == "judge" else None)} for v in VIEWS},
        "mode": settings.mode,
        "settings": dataclasses.asdict(settings),
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


def _rate_work(backend: Rater, work: list[WorkItem], profiles,
               templates: dict[str, Template], job: _Job, report: RateReport,
               progress: bool) -> None:
    """Rate ``work`` in batches with one backend, one stored transaction per batch."""
    settings = job.settings
    stats0 = backend.token_stats()
    read = _reader(backend, profiles, templates, settings)
    with progress_bar("rating", len(work), enabled=progress, fields=("failures",)) as bar:
        for b0 in range(0, len(work), settings.batch_size):
            batch = work[b0:b0 + settings.batch_size]
            judgments = read(batch)
            if len(judgments) != len(batch):
                raise UserError(f"the rating backend returned {len(judgments)} answers "
                                f"for {len(batch)} prompts")
            judgments, low = apply_mass_floor(judgments, settings.min_label_mass)
            rows, bad = batch_rows(batch, judgments, job.keys)
            job.store.add_rows(rows)  # one transaction per batch
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
            check_failures(job.counts[0], job.counts[1], settings, job.run_dir, job.manifest)


def _reader(backend: Rater, profiles, templates: dict[str, Template],
            settings: RateSettings) -> Callable[[list[WorkItem]], list[Judgment]]:
    """``read(batch) -> judgments`` for ``rate.mode``: the rating prompts answered by the
    backend (judge), or each view's likelihood score (``judgments/likelihood.py``)."""
    if settings.mode == "likelihood":
        neutral: dict[int, float] = {}  # an item's neutral term serves every user's pairs

        def read(batch: list[WorkItem]) -> list[Judgment]:
            scores = pmi_scores(backend, batch, profiles, templates["likelihood"],
                                settings.max_liked, neutral)
            return [Judgment(text="", label=None, probs=None, decided_by="pmi", score=s)
                    for s in scores]
        return read

    def read(batch: list[WorkItem]) -> list[Judgment]:
        return backend.judge(judge_requests(batch, profiles, templates, settings.max_liked))
    return read


def _count_tokens(backend: Rater, stats0: dict[str, int], report: RateReport) -> None:
    """Prompt and prefix-cache tokens of this call, from the backend's running counts."""
    stats = backend.token_stats()
    report.prompt_tokens = int(stats.get("prompt_tokens", 0) - stats0.get("prompt_tokens", 0))
    if backend.cached_known:
        report.cached_tokens = int(stats.get("cached_tokens", 0)
                                   - stats0.get("cached_tokens", 0))


def checked_rater_id(settings, prompts_dir: str | Path | None = None, *,
                     mode: str = "judge") -> tuple[str, str]:
    """``(model_id, adapter)`` that rows of this rater are stored under, known before its
    engine starts: the same id the backend reports (registry name plus content hashes of the
    model and adapter, ``+parse`` for ``rater.decide = "parse"``) and the adapter folder's
    name ('' for none). Use it wherever :func:`rate_candidates` is called, so every entry
    point stores under the same key.

    It also checks, with the model's tokenizer, that every label follows the answer cue of the
    rating templates in ``prompts_dir`` as one distinct token (a :class:`UserError` naming the
    template file and the token pieces otherwise), so a bad cue stops before any engine."""
    spec = resolve_checked(settings.model, READER_NEEDS)  # a judge's template: check_judge
    adapter = check_adapter(settings.adapter) if settings.adapter else None
    if mode == "judge":  # the likelihood reader reads no label and needs no chat template
        check_judge(spec.path, settings.model)
        check_label_tokens(spec.path, prompts_dir)
    return (rater_id(model_id(spec, adapter), getattr(settings, "decide", "likelihood")),
            (adapter.name if adapter else ""))


def check_judge(model_path: str | Path, name: str) -> None:
    """A judge answers in the chat template; a model without one (a base model's GGUF) is an
    error here, before any engine starts, and may still serve as a likelihood reader."""
    if not getattr(load_tokenizer(model_path), "chat_template", None):
        raise UserError(f"model {name}: the tokenizer has no chat template, so it cannot judge "
                        "(rate.mode = 'judge'); read it as a likelihood reader instead "
                        "(rate.mode = 'likelihood')")


def check_label_tokens(model_path: str | Path, prompts_dir: str | Path | None = None
                       ) -> dict[str, dict[str, tuple[int, ...]]]:
    """Label token sequences per answer cue of the rating templates for this model's
    tokenizer (``labels.template_label_sequences``: one token or several per label); raises a
    :class:`UserError` naming the template file when a label merges with the cue or two
    labels tokenise alike."""
    templates = load_templates(tuple(VIEW_TEMPLATES.values()), prompts_dir)
    key = tuple(sorted((str(t.path), t.hash) for t in templates.values()))
    return _label_tokens(str(model_path), key)


@functools.lru_cache(maxsize=8)
def _label_tokens(model_path: str, key: tuple) -> dict[str, dict[str, tuple[int, ...]]]:
    templates = [load_template(Path(path).stem, Path(path).parent) for path, _ in key]
    return template_label_sequences(load_tokenizer(model_path), templates)


