"""Data layer: the :class:`Interactions` object, its loaders, splits and noise injection.

Loaders are imported inside :func:`load_data`, so importing this package stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from llmhni_local.core.errors import ConfigError
from llmhni_local.data.dataset import Interactions
from llmhni_local.data.files import load_files
from llmhni_local.data.movielens import load_ml100k
from llmhni_local.data.noise import add_synthetic_noise
from llmhni_local.data.rlmrec import load_rlmrec

if TYPE_CHECKING:
    from llmhni_local.core.config import DataSettings

__all__ = ["DATA_SOURCES", "DataSource", "Interactions", "load_data", "first_users"]


def first_users(data: Interactions, n: int) -> Interactions:
    """Keep users ``0 .. n-1`` and their interactions; every item is kept."""
    if n <= 0 or n >= data.n_users:
        return data
    tr = data.train[:, 0] < n
    return data.replace(
        name=f"{data.name}-first{n}",
        n_users=n,
        train=data.train[tr],
        val=data.val[data.val[:, 0] < n],
        test=data.test[data.test[:, 0] < n],
        train_rating=data.train_rating[tr] if data.train_rating is not None else None,
        train_noise=data.train_noise[tr] if data.train_noise is not None else None,
        user_ids=list(data.user_ids[:n]),
        user_meta=list(data.user_meta[:n]) if data.user_meta is not None else None,
        user_text=list(data.user_text[:n]) if data.user_text is not None else None,
        notes=(*data.notes, f"kept the first {n} of {data.n_users} users"
                            f" ({int(tr.sum())} of {len(tr)} training interactions)"),
    )


def _ml100k(arg: str, settings: "DataSettings") -> Interactions:
    return load_ml100k(settings.max_users or None)  # cuts users itself, before its split


def _rlmrec(arg: str, settings: "DataSettings") -> Interactions:
    return first_users(load_rlmrec(Path(arg).expanduser()), settings.max_users)


def _files(arg: str, settings: "DataSettings") -> Interactions:
    return first_users(load_files(Path(arg).expanduser(), seed=settings.seed), settings.max_users)


@dataclass(frozen=True)
class DataSource:
    """One kind of ``data.source``: ``KIND`` or ``KIND:PATH``.

    Args:
        load: ``load(arg, settings) -> Interactions`` (``arg`` is what follows the colon); it
            applies ``settings.max_users``.
        takes_path: True when the source is written ``KIND:PATH``, False for a bare ``KIND``.
        help: one line for messages and command-line help.
    """

    load: Callable[[str, "DataSettings"], Interactions]
    takes_path: bool
    help: str


#: Every data source by kind: the loader, the allowed values and the help text come from here.
DATA_SOURCES: dict[str, DataSource] = {
    "ml100k": DataSource(_ml100k, False, "MovieLens-100K, embedded"),
    "rlmrec": DataSource(_rlmrec, True, "RLMRec's pickled data folder"),
    "files": DataSource(_files, True, "plain interaction and metadata files"),
}


def source_help() -> str:
    """``'ml100k', 'rlmrec:PATH', 'files:PATH'`` as the allowed values of ``data.source``."""
    return ", ".join(f"'{k}:PATH'" if s.takes_path else f"'{k}'" for k, s in DATA_SOURCES.items())


def load_data(settings: "DataSettings") -> Interactions:
    """Load the data set ``settings.source`` names, then cut users and add noise as set.

    Args:
        settings: ``source`` is a kind of :data:`DATA_SOURCES` (``ml100k``, ``rlmrec:PATH``,
            ``files:PATH``); ``max_users`` keeps the first N users (0 keeps all);
            ``synthetic_noise`` adds that share of random noisy training pairs (seeded by
            ``seed``, which also seeds the random split of files without timestamps).

    Raises:
        ConfigError: ``settings.source`` names no known loader.
        DataError: the data itself is missing or malformed.
    """
    kind, _, arg = settings.source.strip().partition(":")
    source = DATA_SOURCES.get(kind)
    if source is None or source.takes_path != bool(arg):
        raise ConfigError(f"data.source: {settings.source!r} is not one of {source_help()}")
    data = source.load(arg, settings)
    if settings.synthetic_noise > 0:
        data = add_synthetic_noise(data, settings.synthetic_noise, settings.seed)
    return data
