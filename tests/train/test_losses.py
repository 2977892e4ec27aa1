import math

import pytest
import torch
import torch.nn.functional as F

from llmhni_local.train import losses


def test_bpr_matches_formula_and_is_finite_for_large_gaps():
    pos = torch.tensor([2.0, 0.0, -100.0])
    neg = torch.tensor([1.0, 0.0, 100.0])
    out = losses.bpr(pos, neg)
    assert out[0].item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    assert out[1].item() == pytest.approx(math.log(2))
    assert torch.isfinite(out).all() and out[2].item() == pytest.approx(200.0)


def test_truncated_drops_largest_losses():
    pos = torch.tensor([3.0, 2.0, 1.0, -5.0])
    neg = torch.zeros(4)
    loss, keep = losses.truncated(pos, neg, drop_rate=0.25)
    assert keep.tolist() == [True, True, True, False]
    assert loss.item() == pytest.approx(losses.bpr(pos[:3], neg[:3]).mean().item())


def test_tce_schedule():
    assert losses.tce_drop_rate(1, 0.2, 10) == 0.0
    assert losses.tce_drop_rate(6, 0.2, 10) == pytest.approx(0.1)
    assert losses.tce_drop_rate(50, 0.2, 10) == pytest.approx(0.2)


def test_reweighted_downweights_implausible_pairs():
    pos = torch.tensor([2.0, -2.0])
    neg = torch.zeros(2)
    alpha = 0.5
    expected = (torch.sigmoid(pos) ** alpha * losses.bpr(pos, neg)).mean()
    assert losses.reweighted(pos, neg, alpha).item() == pytest.approx(expected.item())
    # alpha = 0 is plain BPR
    assert losses.reweighted(pos, neg, 0.0).item() == pytest.approx(losses.bpr(pos, neg).mean().item())


def test_info_nce_direct_formula():
    torch.manual_seed(0)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    tau = 0.2
    an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
    sim = torch.exp(an @ bn.T / tau)
    expected = -torch.log(sim.diag() / sim.sum(1)).mean()
    assert losses.info_nce(a, b, tau).item() == pytest.approx(expected.item(), rel=1e-5)
    # identical views give a lower loss than independent ones
    assert losses.info_nce(a, a, tau) < losses.info_nce(a, b, tau)


def test_l2_penalty():
    x = torch.ones(4, 3)
    assert losses.l2_penalty(x, x).item() == pytest.approx((12 + 12) / 8)
