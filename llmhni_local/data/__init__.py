"""Data layer: the :class:`Interactions` object, its loaders, splits and noise injection.

Loaders are imported inside :func:`load_data`, so importing this package stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmhni_local.data.dataset import Interactions
from llmhni_local.errors import ConfigError

if TYPE_CHECKING:
    from llmhni_local.config import DataSettings

__all__ = ["Interactions", "load_data", "first_users"]


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


def load_data(settings: "DataSettings") -> Interactions:
    """Load the data set ``settings.source`` names, then cut users and add noise as set.

    Args:
        settings: ``source`` is ``ml100k``, ``rlmrec:PATH`` or ``files:PATH``; ``max_users``
            keeps the first N users (0 keeps all); ``synthetic_noise`` adds that share of
            random noisy training pairs (seeded by ``seed``, which also seeds the random split
            of files without timestamps).

    Raises:
        ConfigError: ``settings.source`` names no known loader.
        DataError: the data itself is missing or malformed.
    """
    source = settings.source.strip()
    kind, _, arg = source.partition(":")
    if kind == "ml100k" and not arg:
        from llmhni_local.data.movielens import load_ml100k

        data = load_ml100k(settings.max_users or None)
    elif kind == "rlmrec" and arg:
        from llmhni_local.data.rlmrec import load_rlmrec

        data = first_users(load_rlmrec(Path(arg).expanduser()), settings.max_users)
    elif kind == "files" and arg:
        from llmhni_local.data.files import load_files

        data = first_users(load_files(Path(arg).expanduser(), seed=settings.seed),
                           settings.max_users)
    else:
        raise ConfigError(f"data.source: {settings.source!r} is not one of 'ml100k', "
                          "'rlmrec:PATH', 'files:PATH'")
    if settings.synthetic_noise > 0:
        from llmhni_local.data.noise import add_synthetic_noise

        data = add_synthetic_noise(data, settings.synthetic_noise, settings.seed)
    return data
