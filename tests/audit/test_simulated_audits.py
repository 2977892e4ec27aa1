"""``audit simulate``: labels from TRAINING ratings only, marked simulated everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from llmhni_local.audit.export import write_table
from llmhni_local.audit.importer import import_labels
from llmhni_local.audit.records import AuditStore
from llmhni_local.audit.simulated_audits import ANNOTATOR, label_from_rating, simulate_sample
from llmhni_local.core.errors import UserError
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, load_candidates


@pytest.mark.parametrize("rating,label", [(5, "High"), (4, "High"), (3, "Medium"),
                                          (2, "Low"), (1, "Low"), (3.5, "Medium")])
def test_rating_rule(rating, label):
    assert label_from_rating(rating) == label


def test_candidates_pool_labels_observed_candidates_from_ratings(rated_run, synth_data, tmp_path):
    data = synth_data()
    ratings = {(int(u), int(i)): float(r) for (u, i), r in zip(data.train, data.train_rating)}
    frame, info = simulate_sample(rated_run, 20, data=data, seed=2)
    assert len(frame) == 20 and (frame["kind"] == "observed").all()
    for u, i, lab, note in zip(frame["user"], frame["item"], frame["label"], frame["note"]):
        assert lab == label_from_rating(ratings[(u, i)])
        assert note == f"rating {ratings[(u, i)]:g}"
    assert (frame["annotator"] == ANNOTATOR).all() and "simulated" in ANNOTATOR
    assert info["simulated"] is True and sum(info["labels"].values()) == 20
    # imported, the labels are stored as simulated
    result = import_labels(rated_run, write_table(frame, tmp_path / "sim.csv"))
    assert result.simulated and result.rows == 20
    with AuditStore(rated_run) as store:
        assert store.labels()["simulated"].astype(bool).all()
        assert store.imports()[0]["simulated"] is True


def test_train_pool_leaves_candidates_out(rated_run, synth_data):
    data = synth_data()
    cands = load_candidates(rated_run / CANDIDATES_FILE)
    taken = set(zip(cands["user"].tolist(), cands["item"].tolist()))
    frame, info = simulate_sample(rated_run, 1000, pool="train", data=data)
    pairs = set(zip(frame["user"].tolist(), frame["item"].tolist()))
    train = set(map(tuple, data.train.tolist()))
    assert pairs <= train and not pairs & taken
    observed = sum(1 for p in taken if p in train)
    assert len(frame) == len(train) - observed == info["available"]


def test_train_pool_leaves_unrated_pairs_out(rated_run, synth_data):
    """Synthetic noise adds training pairs with no rating: never labelled, counted."""
    import dataclasses

    data = synth_data()
    ratings = np.asarray(data.train_rating, dtype=np.float32).copy()
    ratings[::5] = np.nan
    data = dataclasses.replace(data, train_rating=ratings)
    frame, info = simulate_sample(rated_run, 1000, pool="train", data=data)
    unrated = set(map(tuple, data.train[::5].tolist()))
    assert info["unrated_excluded"] == len(data.train[::5]) > 0
    assert not set(zip(frame["user"].tolist(), frame["item"].tolist())) & unrated
    assert frame["label"].isin(["High", "Medium", "Low"]).all()


def test_data_must_be_the_runs(rated_run, synth_data):
    with pytest.raises(UserError, match="not the data the profiles were built from"):
        simulate_sample(rated_run, 5, data=synth_data(seed=7))
    no_ratings = synth_data().replace(train_rating=None)
    with pytest.raises(UserError):
        simulate_sample(rated_run, 5, data=no_ratings)
    with pytest.raises(UserError, match="cannot tell which data"):
        simulate_sample(rated_run, 5)
    assert np.isfinite(synth_data().train_rating).all()
