"""False edits for the hallucinated-edge check: the right counts, the right kinds, repeatable."""

import numpy as np
import pytest

from llmhni_local.core.errors import DataError
from llmhni_local.data.dataset import Interactions
from llmhni_local.verdicts.hallucinated import false_edits


def data(noise=True):
    rng = np.random.default_rng(1)
    codes = rng.choice(40 * 50, 600, replace=False)
    pairs = np.stack([codes // 50, codes % 50], 1)
    d = Interactions("toy", 40, 50, pairs[:400], pairs[400:500], pairs[500:])
    if noise:
        d = d.replace(train_noise=np.arange(400) % 4 == 0)
    return d


def codes(pairs):
    pairs = np.asarray(pairs).reshape(-1, 2)
    return set((pairs[:, 0] * 50 + pairs[:, 1]).tolist())


def test_adds_are_in_no_split_and_removals_are_clean_training_pairs():
    d = data()
    judged = d.train[:10]  # pairs the run's verdicts already name
    e = false_edits(d, 0.1, seed=0, exclude=np.concatenate([judged, [[0, 0], [1, 1]]]))
    assert len(e.added) == len(e.removed) == 40
    assert len(codes(e.added)) == 40 and len(codes(e.removed)) == 40
    assert not codes(e.added) & (codes(d.train) | codes(d.val) | codes(d.test) | {0, 51})
    assert codes(e.removed) <= codes(d.train) - codes(judged)
    assert not codes(e.removed) & codes(d.train[d.train_noise])
    again = false_edits(d, 0.1, seed=0, exclude=np.concatenate([judged, [[0, 0], [1, 1]]]))
    assert np.array_equal(again.added, e.added) and np.array_equal(again.removed, e.removed)
    other = false_edits(d, 0.1, seed=1)
    assert not np.array_equal(other.added, e.added)
    assert len(false_edits(d, 0.0, seed=0).added) == 0


def test_out_of_range_or_too_many_is_one_error():
    with pytest.raises(DataError, match="rate must be in"):
        false_edits(data(), 0.6, seed=0)
    with pytest.raises(DataError, match="clean training pairs"):
        false_edits(data().replace(train_noise=np.ones(400, bool)), 0.1, seed=0)
