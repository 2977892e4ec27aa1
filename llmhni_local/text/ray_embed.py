"""The embedding stage as a Ray Data job (``embed.engine = "ray"``, ``embed --ray``).

:func:`~llmhni_local.text.embed.embed_profiles` decides whether vectors must be computed (its
reuse key) and writes them; this module only computes them on a Ray cluster, with the cluster
helpers of ``backends/ray_cluster.py``:

* **Work**: the user texts, then the item texts, cut into blocks of ``batch_size`` texts
  exactly where the in-process path cuts its backend calls, one Ray Data block each. Every
  backend call so sees the texts it sees in process (padding included).
* **Workers**: ``map_batches`` with an actor pool; each actor holds ONE embedding backend made
  by the same factory as in process (``make_embedding_backend(settings)`` by default) and the
  prompt texts of users and items (resolved by the driver), and embeds each block after its
  part's prompt, as in process. One actor per GPU (``num_gpus=1``) on a cluster with GPUs,
  else one per node with that node's CPUs (``ray_cluster.worker_layout``). Every actor builds
  its backend and embeds one warm-up text before any block is sent; a failure there (no model
  folder on that worker, a dtype it cannot run) is a one-line
  :class:`~llmhni_local.core.errors.UserError` naming the worker.
* **Results** come back to this process (workers write nothing, so the run folder need not be
  shared; the model folder must be at the same path on every worker): each text's vector
  with its position and the worker's model id. The driver puts them in input order and needs
  one model id from all workers; ``embed_profiles`` then writes them with ``save_embeddings``
  as in process (vectors renamed into place, the sidecar last), so a job that dies leaves the
  earlier files as they were.
* **Air-gapped**: joined or started by ``ray_cluster.connect`` (usage stats off, no dashboard, a
  local cluster on 127.0.0.1 whose API server cannot reach outside the machine).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable

import numpy as np

from llmhni_local.backends.ray_cluster import connect, set_data_context, worker_layout
from llmhni_local.backends.ray_cluster import ray_errors as _ray_errors
from llmhni_local.backends.ray_cluster import where as _where
from llmhni_local.core.errors import DataError, UserError
from llmhni_local.core.progress import progress_bar
from llmhni_local.engine.api import Embedder, check_vectors, embed_with_prompt

_WARM_UP = ["Warm-up: one short text to embed."]


class RayEmbedder:
    """One Ray Data actor: one embedding backend, blocks of texts in, vectors out.

    Args:
        make_backend: builds the embedding backend.
        prompts: the text put before each text of a part (``{"users": ..., "items": ...}``);
            a part missing or ``None``: no prompt. (default: ``None``)
    """

    def __init__(self, make_backend: Callable[[], Embedder],
                 prompts: dict[str, str | None] | None = None) -> None:
        self.where = _where()
        self.prompts = dict(prompts or {})
        try:
            self.backend = make_backend()
        except UserError as exc:
            raise UserError(f"{self.where}: {exc}") from None
        self.model_id = self.backend.model_id
        try:  # a dtype or device the worker cannot run fails here, before any block
            out = np.asarray(self.backend.embed(_WARM_UP))
        except Exception as exc:  # noqa: BLE001 - any engine error, named with the worker
            dtype = (self.backend.dtype_choice or {}).get("requested", "?")
            raise UserError(f"{self.where}: the embedder failed its warm-up text with "
                            f"embedder.dtype = {dtype!r} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if out.ndim != 2 or out.shape[0] != 1:
            raise UserError(f"{self.where}: the embedder returned shape {out.shape} for 1 text")

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        parts = batch.column("part").to_pylist()
        idx = batch.column("idx").to_pylist()
        texts = batch.column("text").to_pylist()
        if len(set(parts)) > 1:  # one block is one in-process call: never users and items
            raise UserError(f"{self.where}: a block mixed user and item texts")
        span = f"{parts[0]} {idx[0]}..{idx[-1]}"
        try:
            out = embed_with_prompt(self.backend, texts, self.prompts.get(parts[0]))
        except Exception as exc:  # noqa: BLE001 - one line naming the worker and the texts
            raise UserError(f"{self.where}: the embedder failed on {span} "
                            f"({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        try:
            vecs = check_vectors(out, len(texts), parts[0], idx[0])
        except DataError as exc:
            raise DataError(f"{self.where}: {exc}") from None
        return pa.table({"part": parts, "idx": idx, "vec": [v.tobytes() for v in vecs],
                         "model_id": [self.model_id] * len(idx),
                         "where": [self.where] * len(idx)})


def embed_on_ray(texts: dict[str, list[str]], make_backend: Callable[[], Any], *,
                 batch_size: int, address: str | None, progress: bool = False,
                 prompts: dict[str, str | None] | None = None
                 ) -> tuple[dict[str, np.ndarray], str]:
    """Embed ``texts`` (``{"users": [...], "items": [...]}``) on Ray, each part after its
    prompt in ``prompts`` (same keys; ``None``: none); returns the float32 vectors in input
    order and the model id every worker's backend reported.

    Called by ``embed_profiles`` when ``embed.engine == "ray"``; the address (``address``,
    else ``RAY_ADDRESS``) is checked before anything is sent.
    """
    for what, t in texts.items():
        if not t:
            raise DataError(f"no {what} profiles to embed")
    started = connect(address, setting="embed.ray_address")
    try:
        ds = _job_dataset(texts, make_backend, batch_size, prompts)
        out = _Gather(texts)
        total = sum(len(t) for t in texts.values())
        with progress_bar("embedding", total, enabled=progress) as bar, _ray_errors(), \
                contextlib.closing(iter(ds.iter_batches(batch_size=None,
                                                        batch_format="pyarrow"))) as it:
            for table in it:
                bar.advance(out.add(table))
        return out.result()
    finally:
        if started:
            import ray

            ray.shutdown()


class _Gather:
    """Vectors arriving in any order, put back in input order."""

    def __init__(self, texts: dict[str, list[str]]) -> None:
        self.n = {what: len(t) for what, t in texts.items()}
        self.vecs: dict[str, np.ndarray] = {}
        self.seen = {what: np.zeros(n, dtype=bool) for what, n in self.n.items()}
        self.ids: dict[str, str] = {}  # model id -> a worker that reported it

    def add(self, table: Any) -> int:
        parts = table.column("part").to_pylist()
        idx = np.asarray(table.column("idx").to_pylist(), dtype=np.int64)
        raw = table.column("vec").to_pylist()
        for mid, where in zip(table.column("model_id").to_pylist(),
                              table.column("where").to_pylist()):
            self.ids.setdefault(mid, where)
        for what in set(parts):
            rows = np.flatnonzero(np.asarray(parts) == what)
            vecs = np.frombuffer(b"".join(raw[r] for r in rows), dtype=np.float32)
            vecs = vecs.reshape(len(rows), -1)
            if what not in self.vecs:
                self.vecs[what] = np.zeros((self.n[what], vecs.shape[1]), dtype=np.float32)
            elif vecs.shape[1] != self.vecs[what].shape[1]:
                raise DataError(f"embedder gave {self.vecs[what].shape[1]}-d and "
                                f"{vecs.shape[1]}-d {what} vectors on different Ray workers")
            self.vecs[what][idx[rows]] = vecs
            self.seen[what][idx[rows]] = True
        return len(parts)

    def result(self) -> tuple[dict[str, np.ndarray], str]:
        for what, seen in self.seen.items():
            if not seen.all():  # Ray Data returns every block once; this would be a bug
                raise UserError(f"embed: the Ray job returned {int(seen.sum())} of "
                                f"{seen.size} {what} vectors")
        if len(self.ids) > 1:
            (a, wa), (b, wb) = list(self.ids.items())[:2]
            raise UserError(f"embed: Ray workers hold different embedding models: {a!r} "
                            f"({wa}) and {b!r} ({wb}); the model folder must be the same "
                            "on every node")
        return self.vecs, next(iter(self.ids), "")


def _job_dataset(texts: dict[str, list[str]], make_backend: Callable[[], Any],
                 batch_size: int, prompts: dict[str, str | None] | None = None):
    """The lazy Ray Data pipeline: blocks of texts -> actors -> vectors."""
    import pyarrow as pa
    import ray.data

    set_data_context()
    tables = [pa.table({"part": [what] * len(t[s:s + batch_size]),
                        "idx": list(range(s, s + len(t[s:s + batch_size]))),
                        "text": t[s:s + batch_size]})
              for what, t in texts.items() for s in range(0, len(t), batch_size)]
    actors, resources = worker_layout()
    ds = ray.data.from_arrow(tables)  # one block per table: the in-process cuts are kept
    with warnings.catch_warnings():
        # Ray 2.60 warns that extra remote arguments will go in 2.64; the restart bounds
        # below have no named parameter yet, and without them a crash would loop forever.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            RayEmbedder, batch_size=None, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=min(actors, len(tables))),
            fn_constructor_kwargs={"make_backend": make_backend, "prompts": prompts},
            # a lost worker is restarted and its block embedded again, a few times at most
            max_restarts=3, max_task_retries=3, **resources)
