import numpy as np
import pytest
import torch

from llmhni_local.llmhni.negatives import SemanticNegatives, select_negatives, user_thresholds


def test_sampler_returns_pools_without_positives_and_is_seeded():
    pos = np.array([[u, i] for u in range(5) for i in range(12) if (u + i) % 3])
    s = SemanticNegatives(pos, n_items=12, pool_size=6)
    users = np.repeat(np.arange(5), 40)
    pool = s.sample(users, np.random.default_rng(1))
    assert pool.shape == (200, 6) and pool.dtype == np.int64
    assert not s.is_positive(np.repeat(users, 6), pool.ravel()).any()
    assert np.array_equal(pool, s.sample(users, np.random.default_rng(1)))
    one = SemanticNegatives(pos, 12, pool_size=1).sample(users[:3], np.random.default_rng(0))
    assert one.shape == (3, 1)


def _reference(scores, sim, rule, thr=None, beta=None):
    """Row-by-row reading of the rules."""
    chosen, fallback = [], []
    for r in range(len(scores)):
        s, m = scores[r].tolist(), sim[r].tolist()
        if rule == "threshold":
            low = [j for j in range(len(s)) if m[j] < thr[r]]
            if low:
                best = max(s[j] for j in low)
                chosen.append(min(j for j in low if s[j] == best))
                fallback.append(False)
            else:
                chosen.append(min(range(len(m)), key=lambda j: (m[j], j)))
                fallback.append(True)
        else:
            c = [s[j] - beta * m[j] for j in range(len(s))]
            chosen.append(c.index(max(c)))
            fallback.append(False)
    flagged = [[scores[r][j] > scores[r][chosen[r]] for j in range(scores.shape[1])]
               for r in range(len(scores))]
    return chosen, flagged, fallback


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_rule_matches_the_row_by_row_reading(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (50, 7), generator=g).float()  # many ties
    sim = torch.rand(50, 7, generator=g)
    thr = torch.rand(50, generator=g)
    thr[:5] = -1.0  # every candidate high-similarity: fallback rows
    sel = select_negatives(scores, sim, rule="threshold", threshold=thr)
    chosen, flagged, fallback = _reference(scores, sim, "threshold", thr=thr)
    assert sel.chosen.tolist() == chosen
    assert sel.flagged.tolist() == flagged
    assert sel.fallback.tolist() == fallback and sel.fallback[:5].all()
    rows = torch.arange(50)
    assert not sel.flagged[rows, sel.chosen].any()  # the chosen one is never flagged
    # flagged candidates are high-similarity, and outside fallback rows the chosen one is low
    assert (sim[sel.flagged] >= thr.repeat_interleave(sel.flagged.sum(1))).all()
    ok = ~sel.fallback
    assert (sim[rows[ok], sel.chosen[ok]] < thr[ok]).all()


def test_threshold_rule_by_hand():
    scores = torch.tensor([[5.0, 4.0, 3.0, 1.0], [2.0, 1.0, 0.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.9], [0.7, 0.6, 0.9, 0.8]])
    sel = select_negatives(scores, sim, rule="threshold", threshold=torch.tensor([0.5, 0.5, 0.5]))
    assert sel.chosen.tolist() == [2, 0, 1]  # row 2: all high -> least similar
    assert sel.flagged.tolist() == [[True, True, False, False], [False, False, False, True],
                                    [False, False, True, True]]
    assert sel.fallback.tolist() == [False, False, True]
    # a scalar threshold broadcasts
    assert select_negatives(scores, sim, rule="threshold", threshold=0.5).chosen.tolist() == [2, 0, 1]


@pytest.mark.parametrize("beta", [0.0, 0.5, 3.0])
def test_combined_rule(beta):
    g = torch.Generator().manual_seed(7)
    scores, sim = torch.randn(40, 6, generator=g), torch.rand(40, 6, generator=g)
    sel = select_negatives(scores, sim, rule="combined", beta=beta)
    chosen, flagged, _ = _reference(scores, sim, "combined", beta=beta)
    assert sel.chosen.tolist() == chosen and sel.flagged.tolist() == flagged
    assert not sel.fallback.any()
    rows = torch.arange(40)
    # whatever outscores the chosen negative is more similar than it
    chosen_sim = sim[rows, sel.chosen].unsqueeze(1).expand_as(sim)
    assert (sim[sel.flagged] > chosen_sim[sel.flagged]).all()
    if beta == 0.0:  # no similarity weight: plain hard-negative choice, nothing flagged
        assert torch.equal(sel.chosen, scores.argmax(1)) and not sel.flagged.any()


def test_select_needs_its_parameters():
    s = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        select_negatives(s, s, rule="threshold")
    with pytest.raises(ValueError):
        select_negatives(s, s, rule="combined")
    with pytest.raises(ValueError):
        select_negatives(s, torch.zeros(2, 4), rule="combined", beta=1.0)


def test_sampler_and_selection_never_give_a_positive_or_a_flagged_item():
    rng = np.random.default_rng(0)
    n_users, n_items = 8, 30
    pos = np.array([[u, i] for u in range(n_users) for i in rng.choice(n_items, 10, replace=False)])
    s = SemanticNegatives(pos, n_items, pool_size=8)
    users = np.repeat(np.arange(n_users), 50)
    pool = s.sample(users, rng)
    # score and similarity are functions of (user, item), as in the objective; a pool may
    # hold an item twice, and then both copies tie
    score_table, sim_table = torch.randn(n_users, n_items), torch.rand(n_users, n_items)
    scores = score_table[users[:, None], pool]
    sim = sim_table[users[:, None], pool]
    for rule, kw in (("threshold", {"threshold": torch.full((len(users),), 0.4)}),
                     ("combined", {"beta": 2.0})):
        sel = select_negatives(scores, sim, rule=rule, **kw)
        chosen_items = pool[np.arange(len(users)), sel.chosen.numpy()]
        assert not s.is_positive(users, chosen_items).any()
        flagged_items = np.where(sel.flagged.numpy(), pool, -1)
        assert not (flagged_items == chosen_items[:, None]).any()


def test_user_thresholds_match_numpy_quantile():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 9, 200)
    users[users == 4] = 5  # user 4 has no edge
    sims = rng.random(200)
    for q in (0.0, 0.25, 0.5, 0.9, 1.0):
        got = user_thresholds(users, sims, 10, q)
        for u in range(10):
            if u in (4, 9):
                assert got[u] == np.inf
            else:
                assert got[u] == pytest.approx(np.quantile(sims[users == u], q))
