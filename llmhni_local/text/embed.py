"""Semantic encoding of every profile (stage 2 of docs/METHOD.md).

Every user and item profile goes through the embedding backend once, users after
``embedder.user_prompt`` and items after ``embedder.item_prompt`` (names of the model's prompts,
resolved to their text by :func:`profile_prompts` before any engine starts). The vectors are
saved in ``RUN/embeddings/`` (``users.npy``, ``items.npy``) with a sidecar ``meta.json`` holding
the model id, the embedder settings (pooling, normalisation and prompts included) and the
profiles' sha256. A later call with the same model, settings and profiles reuses them without
starting an engine; a change in any of them embeds again. Fields added to the embedder settings
later (``EMBEDDER_ADDED``) stay out of that key while at their defaults, so vectors saved
before them stay reused.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmhni_local.backends import make_embedding_backend
from llmhni_local.core.config import to_dict
from llmhni_local.core.errors import ConfigError, DataError, UserError
from llmhni_local.core.io import atomic_path, sha256_file, sha256_text, write_json
from llmhni_local.core.progress import progress_bar
from llmhni_local.engine.api import Embedder, check_vectors, embed_with_prompt
from llmhni_local.engine.settings import EMBEDDER_ADDED
from llmhni_local.text.profiles import load_profiles
from llmhni_local.text.ray_embed import embed_on_ray
from llmhni_local.weights.registry import EMBEDDER_NEEDS, model_id, resolve_checked, resolve_model

EMBED_DIR = "embeddings"


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Profile vectors of one run.

    Args:
        users: ``(n_users, dim)`` float32.
        items: ``(n_items, dim)`` float32.
        meta: the sidecar (model id, settings, profiles hash, key).
        reused: True when they came from disk and no engine started.
    """

    users: np.ndarray
    items: np.ndarray
    meta: dict[str, Any]
    reused: bool = False


def embed_key(settings: Any, profiles_hash: str, model_id: str = "") -> str:
    """What decides the vectors: the embedder settings, the model's id and the profiles.

    A field of :data:`~llmhni_local.engine.settings.EMBEDDER_ADDED` at its default is left
    out, so the key of vectors saved before the field existed is unchanged."""
    values = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else settings
    values = {k: v for k, v in values.items()
              if k not in EMBEDDER_ADDED or v != EMBEDDER_ADDED[k]}
    return sha256_text(json.dumps({"settings": values, "model_id": model_id,
                                   "profiles": profiles_hash}, sort_keys=True, default=str))


def model_prompts(folder: str | Path) -> dict[str, str]:
    """A sentence-transformers folder's named prompts (``config_sentence_transformers.json``
    ``prompts``); ``{}`` when it has none."""
    try:
        config = json.loads((Path(folder) / "config_sentence_transformers.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder}/config_sentence_transformers.json: unreadable ({exc})") from None
    prompts = config.get("prompts") if isinstance(config, dict) else None
    return {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}


def profile_prompts(settings: Any) -> dict[str, str | None]:
    """The text put before user and before item profiles: ``{"users": ..., "items": ...}``
    from ``embedder.user_prompt`` / ``item_prompt`` (``None`` where unset). An unknown name
    is a one-line ConfigError listing the model's prompt names."""
    names = {"users": ("user_prompt", settings.user_prompt),
             "items": ("item_prompt", settings.item_prompt)}
    if all(name is None for _, name in names.values()):
        return {"users": None, "items": None}  # no model folder read
    prompts = model_prompts(resolve_model(settings.model).path)
    for field, name in names.values():
        if name is not None and name not in prompts:
            has = (f"its prompts are {', '.join(map(repr, prompts))}" if prompts
                   else "it has none (no prompts in config_sentence_transformers.json)")
            raise ConfigError(f"embedder.{field} = {name!r} is not a prompt of "
                              f"{settings.model}: {has}")
    return {what: None if name is None else prompts[name]
            for what, (_, name) in names.items()}


def embedder_model_id(settings: Any) -> str:
    """The embedder's id known before an engine starts (registry name plus content hash; for
    a remote server, its URL and model name)."""
    if settings.backend == "openai":
        return f"openai:{settings.base_url}:{settings.served_model or settings.model}"
    return model_id(resolve_checked(settings.model, EMBEDDER_NEEDS))


def embed_profiles(run_dir: str | Path, settings: Any,
                   make_backend: Callable[[], Embedder] | None = None, *,
                   model_id: str = "", batch_size: int = 512, force: bool = False,
                   progress: bool = False, embed: Any = None) -> Embeddings:
    """Embed every profile of ``RUN``, or reuse the saved vectors when nothing changed.

    Args:
        run_dir: run folder holding ``profiles/``.
        settings: the embedder settings (a dataclass; part of the reuse key).
        make_backend: builds the embedding backend; default
            ``llmhni_local.backends.make_embedding_backend(settings)``. Called only when
            the vectors must be computed.
        model_id: the model's id known before an engine starts (e.g. from the registry, with
            its content hash); part of the reuse key so a changed model folder re-embeds.
        batch_size: texts per backend call.
        force: embed even when saved vectors match.
        progress: show progress (:mod:`llmhni_local.core.progress`).
        embed: where to compute (:class:`~llmhni_local.engine.settings.EmbedSettings`; None: in
            process). With ``engine = "ray"`` the same blocks are embedded by Ray workers
            (``text/ray_embed.py``) and written here exactly as in process.
    """
    run_dir = Path(run_dir)
    profiles = load_profiles(run_dir)
    key = embed_key(settings, profiles.hash, model_id)
    folder = run_dir / EMBED_DIR
    if not force:
        cached = _load_if(folder, key)
        if cached is not None:
            return cached
    prompts = profile_prompts(settings)  # an unknown prompt name: before any engine starts
    if make_backend is None:  # by reference, so Ray workers import it rather than unpickle it
        make_backend = functools.partial(_default_backend, settings)
    if embed is not None and embed.engine == "ray":
        vecs, backend_id = embed_on_ray({"users": profiles.users, "items": profiles.items},
                                        make_backend, batch_size=batch_size,
                                        address=embed.ray_address, progress=progress,
                                        prompts=prompts)
        users, items = vecs["users"], vecs["items"]
    else:
        backend = make_backend()
        try:
            users = _embed_all(backend, profiles.users, batch_size, "users", progress,
                               prompts["users"])
            items = _embed_all(backend, profiles.items, batch_size, "items", progress,
                               prompts["items"])
            backend_id = backend.model_id
        finally:
            backend.close()
    if users.shape[1] != items.shape[1]:
        raise DataError(f"embedder gave {users.shape[1]}-d user and {items.shape[1]}-d item "
                        "vectors")
    meta = {
        "key": key, "model_id": backend_id or model_id, "settings": to_dict(settings),
        "profiles_hash": profiles.hash, "dim": int(users.shape[1]),
        "n_users": int(users.shape[0]), "n_items": int(items.shape[0]),
    }
    save_embeddings(folder, users, items, meta)
    return Embeddings(users, items, meta, reused=False)


def _embed_all(backend: Embedder, texts: list[str], batch_size: int, what: str,
               progress: bool, prompt: str | None = None) -> np.ndarray:
    parts = []
    with progress_bar(f"embedding {what}", len(texts), enabled=progress) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            out = embed_with_prompt(backend, chunk, prompt)
            parts.append(check_vectors(out, len(chunk), what, start))
            bar.advance(len(chunk))
    if not parts:
        raise DataError(f"no {what} profiles to embed")
    return np.concatenate(parts)


def _default_backend(settings: Any) -> Embedder:
    return make_embedding_backend(settings)


def save_embeddings(folder: Path, users: np.ndarray, items: np.ndarray,
                    meta: dict[str, Any]) -> None:
    """Write the vectors, then the sidecar last (a killed write leaves no valid sidecar)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta_path.unlink()  # the old sidecar must not vouch for new, half-written vectors
    sums = {}
    for name, arr in (("users", users), ("items", items)):
        with atomic_path(folder / f"{name}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(arr, dtype=np.float32))
        sums[name] = sha256_file(folder / f"{name}.npy")
    write_json(meta_path, {**meta, "sha256": sums})


def _load_if(folder: Path, key: str) -> Embeddings | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return None
    if meta.get("key") != key:
        return None
    try:
        return load_embeddings(folder.parent, _meta=meta)
    except DataError:
        return None  # a vector file is missing or changed: embed again


def load_embeddings(run_dir: str | Path, *, _meta: dict | None = None) -> Embeddings:
    """The saved vectors of ``RUN``, checked against their sidecar."""
    folder = Path(run_dir) / EMBED_DIR
    meta_path = folder / "meta.json"
    if _meta is None:
        if not meta_path.is_file():
            raise UserError(f"{folder}: no embeddings here; run the `embed` stage first")
        _meta = json.loads(meta_path.read_text())
    for name in ("users", "items"):
        path = folder / f"{name}.npy"
        if not path.is_file() or sha256_file(path) != _meta.get("sha256", {}).get(name):
            raise DataError(f"{path}: missing or does not match {meta_path}; run `embed` again")
    users = np.load(folder / "users.npy")
    items = np.load(folder / "items.npy")
    return Embeddings(users, items, _meta, reused=True)


