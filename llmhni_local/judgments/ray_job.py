"""The rating stage as a Ray Data job (``rate.engine = "ray"``, ``rate --ray``).

:func:`~llmhni_local.judgments.run.rate_candidates` decides what is missing and orders it exactly as
in process; this module only executes that work list on a Ray cluster:

* **Work**: the missing work items (``rating.plan.WorkItem``; rows of ``user``, ``item``,
  ``view``, ``kind`` columns on the way to the workers), packed whole users at a time into blocks
  of about ``rate.batch_size`` prompts (a user's prompts in one block, so a vLLM worker reuses
  the user's prefix), one Ray Data block each.
* **Workers**: ``map_batches`` with an actor pool; each actor holds ONE rating backend of the
  toolkit's own, built by the same ``make_backend`` as in process, so prompts (``view_messages``
  and the templates) and label log-probabilities are read exactly as in process. One actor
  per GPU (``num_gpus=1``) on a cluster with GPUs, else one per node with that node's CPUs.
  Every actor starts, checks the model, rates one warm-up prompt and checks that it sees the
  run folder before any batch is dispatched; a failure there is a one-line
  :class:`~llmhni_local.core.errors.UserError` naming the worker.
* **Exactly once**: workers write each batch as a Parquet shard in ``RUN/shards/<job>/``; the
  driver merges shards into ``judgments.sqlite`` as they arrive (``judgments/shards.py``: one
  transaction each, ``INSERT OR IGNORE``, the shard deleted after the commit), and merges any
  shard an earlier killed job left before it looks at what is missing. A worker lost
  mid-batch is restarted and its batch rated again (same shard name, same rows).
* **Air-gapped**: usage stats off (``RAY_USAGE_STATS_ENABLED=0`` unless set), no dashboard;
  a local cluster binds to 127.0.0.1, and its API-server process (which with the dashboard
  off runs only Ray's usage-stats module, and that module asks the cloud metadata address
  169.254.169.254 which cloud it is on even with usage stats off) is started with its HTTP
  proxy pointed at a closed loopback port, so the question never leaves the machine.

The run folder must be on a filesystem every worker sees (the shards are written there), and
every worker needs the toolkit installed and the model at the same path; both are checked.
"""

from __future__ import annotations

import contextlib
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

from llmhni_local.backends.ray_cluster import (
    connect,
    ray_errors,
    set_data_context,
    worker_layout,
)
from llmhni_local.backends.ray_cluster import where as worker_where
from llmhni_local.core.errors import UserError
from llmhni_local.core.io import write_json
from llmhni_local.core.progress import progress_bar
from llmhni_local.engine.api import JudgeRequest, Rater
from llmhni_local.judgments.plan import (
    RATING_MANIFEST,
    WorkItem,
    apply_mass_floor,
    batch_rows,
    check_failures,
    judge_requests,
)
from llmhni_local.judgments.shards import job_lock, merge_pending, merge_shard, write_shard
from llmhni_local.judgments.store import VIEWS

_WARM_UP = JudgeRequest(messages=[{"role": "user", "content": "Warm-up. Answer with one word: "
                                                             "High, Medium or Low."}])
_COLUMNS = ("user", "item", "view", "kind")  # a WorkItem's fields, as Ray Data columns


class RayRater:
    """One Ray Data actor: one rating backend, batches of work in, shard records out."""

    def __init__(self, make_backend: Callable[[], Rater], profiles: Any, templates: dict,
                 keys: dict, max_liked: int, min_label_mass: float, shard_dir: str,
                 token: str) -> None:
        where = worker_where()
        self.shard_dir = Path(shard_dir)
        mark = self.shard_dir / ".job"
        if not mark.is_file() or mark.read_text() != token:
            raise UserError(f"{where}: does not see {self.shard_dir} (the run folder must be "
                            "on a filesystem every Ray worker shares)")
        try:
            self.backend: Rater = make_backend()
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        expected = next(iter(keys.values())).model_id
        got = self.backend.model_id
        if got and got != expected:
            raise UserError(f"{where}: the rating backend reports model id {got!r} but the "
                            f"run expected {expected!r} (another model at the same path?)")
        self._warm_up(where)
        self.profiles, self.templates, self.keys = profiles, templates, keys
        self.max_liked, self.min_label_mass = max_liked, min_label_mass

    def _warm_up(self, where: str) -> None:
        """One judgment before any batch: a dtype or device the worker cannot run fails
        here, not half-way through the job."""
        try:
            out = self.backend.judge([_WARM_UP])
        except Exception as exc:  # noqa: BLE001 - any engine error, named with the worker
            dtype = (self.backend.dtype_choice or {}).get("requested", "?")
            raise UserError(f"{where}: the rater failed its warm-up judgment with "
                            f"rater.dtype = {dtype!r} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if len(out) != 1:
            raise UserError(f"{where}: the rating backend returned {len(out)} answers for 1")

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        stats0 = self.backend.token_stats()
        work = from_columns({c: batch.column(c).to_pylist() for c in _COLUMNS})
        judgments = self.backend.judge(judge_requests(work, self.profiles, self.templates,
                                                      self.max_liked))
        if len(judgments) != len(work):
            raise UserError(f"{worker_where()}: the rating backend returned {len(judgments)} "
                            f"answers for {len(work)} prompts")
        judgments, low = apply_mass_floor(judgments, self.min_label_mass)
        rows, bad = batch_rows(work, judgments, self.keys)  # the rows stored in process
        path = write_shard(self.shard_dir, rows)
        return pa.table({"shard": [str(path)], "rows": [len(rows)], "failures": [bad],
                         "low_mass": [low], **self._tokens(stats0)})

    def _tokens(self, stats0: dict) -> dict[str, list[int]]:
        """This batch's prompt tokens and prefix-cache hits (-1: the backend cannot tell)."""
        stats = self.backend.token_stats()
        known = self.backend.cached_known
        return {"prompt_tokens": [int(stats.get("prompt_tokens", 0)
                                      - stats0.get("prompt_tokens", 0))],
                "cached_tokens": [int(stats.get("cached_tokens", 0)
                                      - stats0.get("cached_tokens", 0)) if known else -1]}


# ---------------------------------------------------------------------------- the driver
def pack_by_user(work: list[WorkItem], size: int) -> list[list[WorkItem]]:
    """Blocks of whole users' work items (``work`` is grouped by user), each up to ``size``
    items; a user with more than ``size`` items gets blocks of their own.

    Example:
        >>> w = [WorkItem(0, 1, "user", "o"), WorkItem(0, 2, "user", "o"),
        ...      WorkItem(1, 1, "user", "o"), WorkItem(2, 5, "item", "u")]
        >>> [len(b) for b in pack_by_user(w, 2)]
        [2, 2]
    """
    blocks: list[list[WorkItem]] = []
    cur: list[WorkItem] = []
    k = 0
    while k < len(work):
        e = k
        while e < len(work) and work[e].user == work[k].user:
            e += 1
        user = work[k:e]
        if cur and len(cur) + len(user) > size:
            blocks.append(cur)
            cur = []
        for s in range(0, len(user), size):
            part = user[s:s + size]
            if len(part) == size:
                blocks.append(part)
            else:
                cur += part
        k = e
    if cur:
        blocks.append(cur)
    return blocks


def to_columns(work: list[WorkItem]) -> dict[str, list]:
    """Work items as Ray Data columns (the boundary: rows travel as Arrow, not objects).

    >>> to_columns([WorkItem(3, 7, "item", "observed")])
    {'user': [3], 'item': [7], 'view': ['item'], 'kind': ['observed']}
    """
    return {"user": [w.user for w in work], "item": [w.item for w in work],
            "view": [w.view for w in work], "kind": [w.kind for w in work]}


def from_columns(columns: dict[str, list]) -> list[WorkItem]:
    """The work items of Ray Data columns (:func:`to_columns` undone).

    >>> from_columns(to_columns([WorkItem(3, 7, "item", "observed")]))
    [WorkItem(user=3, item=7, view='item', kind='observed')]
    """
    return [WorkItem(int(u), int(i), str(v), str(k))
            for u, i, v, k in zip(*(columns[c] for c in _COLUMNS))]


def _dataset(blocks: list[list[WorkItem]]):
    import pyarrow as pa
    import ray.data

    tables = [pa.table(to_columns(b)) for b in blocks]
    return ray.data.from_arrow(tables)  # one block per table: the packing above is kept


def _refilter(store, work: list[WorkItem], keys: dict) -> list[WorkItem]:
    """The items of ``work`` still missing from the store (after leftover shards merged)."""
    todo = {}
    for v in VIEWS:
        pairs = [(w.user, w.item) for w in work if w.view == v]
        todo[v] = set(store.missing(pairs, v, keys[v]))
    return [w for w in work if (w.user, w.item) in todo[w.view]]


def rate_on_ray(run_dir: Path, store: Any, work: list[WorkItem],
                make_backend: Callable[[], Rater], *, profiles: Any, templates: dict,
                keys: dict, settings: Any, report: Any, manifest: dict,
                seen: tuple[int, int], progress: bool = True,
                on_batch: Callable[[int], None] | None = None) -> Any:
    """Rate ``work`` (from :func:`~llmhni_local.judgments.run.plan`, what the store is missing) on
    Ray, merging the rows into ``store`` exactly once; fills and returns ``report``.

    Called by ``rate_candidates`` when ``rate.engine == "ray"``, after every input check and
    the failure-share check.
    """
    n_seen, n_bad = seen
    with job_lock(run_dir) as root:
        added, bad, _ = merge_pending(store, run_dir)  # what a killed job left
        n_seen, n_bad = n_seen + added, n_bad + bad
        todo = _refilter(store, work, keys) if added else work
        report.skipped += len(work) - len(todo)
        if todo:
            check_failures(n_seen, n_bad, settings, run_dir, manifest)
            n_seen, n_bad = _run_job(root, store, todo, make_backend, profiles=profiles,
                                     templates=templates, keys=keys, settings=settings,
                                     report=report, manifest=manifest, seen=(n_seen, n_bad),
                                     progress=progress, on_batch=on_batch)
    write_json(run_dir / RATING_MANIFEST, {**manifest, "status": "done", "stored": n_seen,
                                           "failures": n_bad, "last_call": report.as_dict()})
    return report


def _run_job(root: Path, store: Any, work: list[WorkItem], make_backend: Callable[[], Rater], *,
             profiles: Any, templates: dict, keys: dict, settings: Any, report: Any,
             manifest: dict, seen: tuple[int, int], progress: bool,
             on_batch: Callable[[int], None] | None) -> tuple[int, int]:
    """One Ray Data job over ``work``; shards merged as they arrive. Returns the new
    ``(stored, failures)`` counts of this model and prompt."""
    run_dir = root.parent
    started = connect(settings.ray_address)
    start = time.perf_counter()
    job = root / uuid.uuid4().hex[:12]
    job.mkdir()
    token = uuid.uuid4().hex
    (job / ".job").write_text(token)  # workers prove they see the run folder
    report.engine_started = True
    n_seen, n_bad = seen
    try:
        ds = _job_dataset(work, make_backend, profiles=profiles, templates=templates,
                          keys=keys, settings=settings, job=job, token=token)
        rows = ds.iter_rows()
        with progress_bar("rating", len(work), enabled=progress, fields=("failures",)) as bar, \
                ray_errors(), contextlib.closing(iter(rows)) as it:
            for rec in it:
                added, bad = merge_shard(store, rec["shard"])
                report.batches += 1
                report.rated += int(rec["rows"])
                report.failures += bad
                _add_tokens(report, rec)
                n_seen, n_bad = n_seen + added, n_bad + bad
                bar.advance(int(rec["rows"]), failures=n_bad)
                if on_batch is not None:
                    on_batch(report.batches)
                check_failures(n_seen, n_bad, settings, run_dir, manifest)
    finally:
        report.seconds = time.perf_counter() - start
        (job / ".job").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            job.rmdir()  # only when empty: unmerged shards stay for the next run
        if started:
            import ray

            ray.shutdown()
    return n_seen, n_bad


def _job_dataset(work: list[WorkItem], make_backend: Callable[[], Rater], *, profiles: Any,
                 templates: dict, keys: dict, settings: Any, job: Path, token: str):
    """The lazy Ray Data pipeline: packed blocks -> actors -> one shard record per block."""
    import ray.data

    set_data_context()
    actors, resources = worker_layout()
    ds = _dataset(pack_by_user(work, settings.batch_size))
    with warnings.catch_warnings():
        # Ray 2.60 warns that extra remote arguments will go in 2.64; the restart bounds
        # below have no named parameter yet, and without them a crash would loop forever.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            RayRater, batch_size=None, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"make_backend": make_backend, "profiles": profiles,
                                   "templates": templates, "keys": keys,
                                   "max_liked": settings.max_liked,
                                   "min_label_mass": settings.min_label_mass,
                                   "shard_dir": str(job), "token": token},
            # a lost worker is restarted and its batch rated again, a few times at most
            max_restarts=3, max_task_retries=3, **resources)


def _add_tokens(report: Any, rec: dict) -> None:
    """Sum the workers' token counts into the report (the same fields as in process)."""
    report.low_mass += int(rec["low_mass"])
    report.prompt_tokens += int(rec["prompt_tokens"])
    if int(rec["cached_tokens"]) >= 0:
        report.cached_tokens = (report.cached_tokens or 0) + int(rec["cached_tokens"])


