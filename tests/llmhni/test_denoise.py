import numpy as np
import pandas as pd
import pytest

from llmhni_local.core.errors import DataError
from llmhni_local.llmhni.denoise import VERDICT_DTYPE, denoised_edges


def _table(rows, frame=False):
    arr = np.array([(u, i, k, v, 0.5, False) for u, i, k, v in rows], dtype=VERDICT_DTYPE)
    return pd.DataFrame({n: arr[n] for n in VERDICT_DTYPE.names}) if frame else arr


G = np.array([[0, 0], [0, 1], [0, 2], [1, 1], [1, 3], [2, 0], [2, 4]])
ROWS = [(0, 1, "observed", "noisy"),      # removed
        (1, 3, "observed", "noisy"),      # removed
        (2, 0, "observed", "hard"),       # kept
        (1, 0, "unobserved", "hard"),     # added
        (2, 2, "unobserved", "hard"),     # added
        (0, 3, "unobserved", "noisy")]    # stays out


@pytest.mark.parametrize("frame", [False, True])
def test_g_prime_differs_from_g_by_exactly_the_verdicts(frame):
    gp, rep = denoised_edges(G, _table(ROWS, frame))
    as_set = lambda a: set(map(tuple, np.asarray(a).tolist()))
    removed = {(0, 1), (1, 3)}
    added = {(1, 0), (2, 2)}
    assert as_set(gp) == (as_set(G) - removed) | added
    assert len(gp) == len(as_set(gp))  # no duplicate edge
    assert as_set(rep.removed) == removed and as_set(rep.added) == added
    # kept edges first in their order, then the additions sorted
    assert gp.tolist() == [[0, 0], [0, 2], [1, 1], [2, 0], [2, 4], [1, 0], [2, 2]]
    assert rep.to_dict() == {"edges_G": 7, "edges_Gprime": 7, "removed": 2, "added": 2,
                             "kept_hard": 1, "rejected_unobserved": 1, "duplicate_rows": 0,
                             "simulated": False}
    assert gp.dtype == np.int64


def test_no_verdicts_leave_g_unchanged_and_duplicate_edges_count_once():
    gp, rep = denoised_edges(G, _table([]))
    assert np.array_equal(gp, G) and rep.edges_G == rep.edges_Gprime == 7
    gp, rep = denoised_edges(np.concatenate([G, G[:2]]), _table([(0, 0, "observed", "noisy")]))
    assert (0, 0) not in set(map(tuple, gp.tolist())) and rep.edges_G == 7 and len(gp) == 6


def test_random_verdicts_against_set_arithmetic():
    rng = np.random.default_rng(0)
    g = np.unique(np.stack([rng.integers(0, 20, 300), rng.integers(0, 40, 300)], 1), axis=0)
    g_set = set(map(tuple, g.tolist()))
    obs = g[rng.choice(len(g), 60, replace=False)]
    unobs = [(u, i) for u, i in zip(rng.integers(0, 20, 200), rng.integers(0, 40, 200))
             if (u, i) not in g_set]
    unobs = list(dict.fromkeys(unobs))[:60]
    rows = [(u, i, "observed", rng.choice(["hard", "noisy"])) for u, i in obs.tolist()]
    rows += [(u, i, "unobserved", rng.choice(["hard", "noisy"])) for u, i in unobs]
    gp, rep = denoised_edges(g, _table(rows))
    expect = (g_set - {(u, i) for u, i, k, v in rows if k == "observed" and v == "noisy"}) \
        | {(u, i) for u, i, k, v in rows if k == "unobserved" and v == "hard"}
    assert set(map(tuple, gp.tolist())) == expect and len(gp) == len(expect)


def test_identical_repeats_are_ignored_and_conflicts_rejected():
    gp, rep = denoised_edges(G, _table([(0, 1, "observed", "noisy"), (0, 1, "observed", "noisy")]))
    assert rep.duplicate_rows == 1 and len(rep.removed) == 1 and len(gp) == 6
    with pytest.raises(DataError, match="conflicting"):
        denoised_edges(G, _table([(0, 1, "observed", "noisy"), (0, 1, "observed", "hard")]))


@pytest.mark.parametrize("row, match", [
    ((0, 3, "observed", "noisy"), "not a training edge"),
    ((0, 0, "unobserved", "hard"), "is a training edge"),
    ((0, 0, "observed", "maybe"), "verdict"),
    ((0, 0, "seen", "hard"), "kind"),
])
def test_inconsistent_rows_are_errors(row, match):
    with pytest.raises(DataError, match=match):
        denoised_edges(G, _table([row]))


def test_missing_column_and_simulated_flag():
    df = pd.DataFrame({"user": [0], "item": [1], "kind": ["observed"]})
    with pytest.raises(DataError, match="verdict"):
        denoised_edges(G, df)
    df["verdict"] = ["noisy"]
    _, rep = denoised_edges(G, df)  # optional columns may be absent
    assert rep.simulated is False
    df["simulated"] = [True]
    _, rep = denoised_edges(G, df)
    assert rep.simulated is True


def test_oracle_edges_remove_every_flagged_pair():
    from llmhni_local.llmhni.denoise import oracle_edges

    g = np.array([[0, 0], [0, 1], [1, 1], [0, 1], [2, 3]])
    noise = np.array([False, True, False, False, True])
    # (0, 1) is listed twice, flagged once: both copies go
    assert oracle_edges(g, noise).tolist() == [[0, 0], [1, 1]]
    assert oracle_edges(g, np.zeros(5, bool)).tolist() == g.tolist()
    with pytest.raises(DataError, match="no ground-truth noise flags"):
        oracle_edges(g, None)
    with pytest.raises(DataError, match="4 noise flags for 5"):
        oracle_edges(g, np.zeros(4, bool))
