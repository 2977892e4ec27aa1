
import numpy as np
import pytest
import torch

from llmhni_local.baselines import simgcl
from llmhni_local.baselines.simgcl import (
    GRID,
    RLMREC_AMAZON,
    SimGCLObjective,
    SimGCLSettings,
    noise_perturbation,
    uniform_noise,
)
from llmhni_local.core.config import TrainSettings, build
from llmhni_local.core.errors import ConfigError
from llmhni_local.models import NGCF, LightGCN
from llmhni_local.train import losses
from llmhni_local.train.objectives import RecObjective

N_USERS, N_ITEMS = 6, 9
EDGES = np.array([[0, 0], [0, 1], [0, 2], [1, 1], [1, 3], [2, 2], [2, 4], [2, 5], [3, 0], [3, 6],
                  [4, 5], [4, 7], [5, 8], [5, 3], [1, 6]])
TS = TrainSettings(l2=1e-2)
INFO_NCE = losses.info_nce  # the real one, before any test's spy replaces it
BATCH = (torch.tensor([0, 1, 2, 2, 4]), torch.tensor([1, 3, 4, 5, 7]), torch.tensor([8, 0, 1, 7, 2]))



def _model(cls, seed=0):
    torch.manual_seed(seed)
    return cls(N_USERS, N_ITEMS, dim=8, layers=2)


def _spy(monkeypatch):
    """Record every ``losses.info_nce`` call's two views (the objective calls it through the
    module, so the spy sees them) and still compute it."""
    calls, real = [], losses.info_nce

    def spy(a, b, t):
        calls.append((a.detach().clone(), b.detach().clone(), t))
        return real(a, b, t)

    monkeypatch.setattr(losses, "info_nce", spy)
    return calls


def test_noise_has_row_norm_eps_and_the_signs_of_the_embeddings():
    torch.manual_seed(0)
    x = torch.randn(50, 16)
    x[3, :5] = 0.0  # a row with exact zeros: no noise there, so its norm is below eps
    d = uniform_noise(x, 0.3)
    norms = d.norm(dim=1)
    assert (norms <= 0.3 + 1e-6).all()
    full = torch.ones(50, dtype=torch.bool)
    full[3] = False
    assert torch.allclose(norms[full], torch.full((49,), 0.3), atol=1e-6)
    assert norms[3] < 0.3 - 1e-4
    nz = x != 0
    assert (torch.sign(d[nz]) == torch.sign(x[nz])).all() and (d[~nz] == 0).all()
    assert not torch.equal(d, uniform_noise(x, 0.3))  # redrawn every call


def test_noise_follows_torch_seed_and_perturbs_each_layer_by_eps():
    torch.manual_seed(5)
    a = uniform_noise(torch.randn(4, 3), 0.1)
    torch.manual_seed(5)
    b = uniform_noise(torch.randn(4, 3), 0.1)
    assert torch.equal(a, b)
    obj = SimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, SimGCLSettings(eps=0.1))
    model = _model(LightGCN)
    seen = []

    def perturb(x):  # records each propagated layer before and after the noise
        y = noise_perturbation(0.1)(x)
        seen.append(((y - x).norm(dim=1), (x != 0).all(dim=1)))
        return y

    model.layer_embeddings(obj.adj, perturb)
    assert len(seen) == 2  # one noise per propagated layer
    for norms, full in seen:
        assert torch.allclose(norms[full], torch.full_like(norms[full], 0.1), atol=1e-6)


@pytest.mark.parametrize("cls", [LightGCN, NGCF])
def test_the_contrast_is_between_two_perturbed_views_not_the_clean_one(cls, monkeypatch):
    calls = _spy(monkeypatch)
    s = SimGCLSettings(eps=0.1, weight=0.5, temp=0.2, warmup=0)
    obj = SimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, s)
    model = _model(cls)
    model.eval()  # NGCF: no dropout, so the views differ by the noise alone
    torch.manual_seed(1)
    out = obj(model, *BATCH)
    assert len(calls) == 2 and {t for *_, t in calls} == {0.2}
    users, pos = torch.unique(BATCH[0]), torch.unique(BATCH[1])
    with torch.no_grad():
        cu, ci = model(obj.adj)
        torch.manual_seed(1)  # the same draws, in the objective's order: view 1, then view 2
        u1, i1 = model(obj.adj, noise_perturbation(0.1))
        u2, i2 = model(obj.adj, noise_perturbation(0.1))
    (a_u, b_u, _), (a_i, b_i, _) = calls
    assert torch.allclose(a_u, u1[users]) and torch.allclose(b_u, u2[users])
    assert torch.allclose(a_i, i1[pos]) and torch.allclose(b_i, i2[pos])
    assert not torch.allclose(a_u, b_u, atol=1e-4)  # the two views differ
    assert not torch.allclose(a_u, cu[users], atol=1e-4)  # and differ from the clean one
    assert not torch.allclose(b_i, ci[pos], atol=1e-4)
    expected = INFO_NCE(u1[users], u2[users], 0.2) + INFO_NCE(i1[pos], i2[pos], 0.2)
    assert out.parts["cl"] == pytest.approx(float(expected), rel=1e-5)
    p = out.parts
    assert float(out.total.detach()) == pytest.approx(p["rec"] + p["l2"] + 0.5 * p["cl"], rel=1e-5)


@pytest.mark.parametrize("cls", [LightGCN, NGCF])
def test_no_noise_and_no_weight_is_exactly_rec_objective_bpr(cls):
    ts = TrainSettings(l2=1e-2, loss="bpr")
    ours = SimGCLObjective(EDGES, N_USERS, N_ITEMS, ts, SimGCLSettings(eps=0.0, weight=0.0))
    plain = RecObjective(EDGES, N_USERS, N_ITEMS, ts)
    model = _model(cls)
    torch.manual_seed(3)  # NGCF's message dropout draws from it
    a = ours(model, *BATCH)
    torch.manual_seed(3)
    b = plain(model, *BATCH)
    assert float(a.total.detach()) == pytest.approx(float(b.total.detach()), rel=1e-6)
    assert a.parts == pytest.approx(b.parts) and "cl" not in a.parts


def test_no_noise_makes_the_views_the_clean_propagation(monkeypatch):
    calls = _spy(monkeypatch)
    obj = SimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, SimGCLSettings(eps=0.0, weight=1.0))
    model = _model(LightGCN)
    obj(model, *BATCH)
    with torch.no_grad():
        cu, _ = model(obj.adj)
    users = torch.unique(BATCH[0])
    assert torch.allclose(calls[0][0], cu[users]) and torch.allclose(calls[0][1], cu[users])


def test_same_torch_seed_same_loss_other_seed_other_noise():
    obj = SimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, SimGCLSettings())
    model = _model(LightGCN)
    outs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        outs.append(obj(model, *BATCH).parts)
    assert outs[0] == outs[1]
    assert outs[0]["cl"] != outs[2]["cl"] and outs[0]["rec"] == outs[2]["rec"]


def test_the_contrastive_weight_warms_up_linearly():
    obj = SimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, SimGCLSettings(weight=0.5, warmup=4))
    model = _model(LightGCN)
    for epoch, share in ((1, 0.0), (3, 0.5), (5, 1.0), (9, 1.0)):
        obj.start_epoch(epoch, np.random.default_rng(0))
        out = obj(model, *BATCH)
        p = out.parts
        assert p["cl"] > 0  # computed (and reported) during the warm-up too
        assert float(out.total.detach()) == pytest.approx(p["rec"] + p["l2"] + share * 0.5 * p["cl"],
                                                          rel=1e-5)


@pytest.mark.parametrize("cls", [LightGCN, NGCF])
def test_fit_trains_with_a_finite_falling_loss_and_evaluates_unperturbed(
        cls, fits_and_evaluates_clean):
    def make(data, ts):
        return SimGCLObjective(data.train, data.n_users, data.n_items, ts, SimGCLSettings(warmup=0))

    fits_and_evaluates_clean(make, cls, 0.9)


def test_settings_defaults_grid_and_checks():
    s = SimGCLSettings()
    assert (s.eps, s.weight, s.temp, s.warmup) == (0.1, 0.1, 0.2, 10)
    assert RLMREC_AMAZON == SimGCLSettings(eps=0.9, weight=0.1, temp=0.2, warmup=0)
    assert 1 <= len(GRID) <= 2 and all(1 <= len(v) <= 3 for v in GRID.values())
    assert set(GRID) <= {"eps", "weight", "temp"}
    assert build(SimGCLSettings, {"eps": 0.2, "weight": 0.1}) == SimGCLSettings(0.2, 0.1)
    for bad in ({"eps": -0.1}, {"weight": -1.0}, {"temp": 0.0}, {"eps": float("nan")},
                {"warmup": -1}):
        with pytest.raises(ConfigError, match=f"baselines.simgcl.{next(iter(bad))}"):
            SimGCLSettings(**bad)


def test_a_backbone_without_layers_is_a_clear_error():
    class Flat(torch.nn.Module):
        def forward(self, adj):
            raise AssertionError("not reached")

    obj = SimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, SimGCLSettings())
    with pytest.raises(ConfigError, match="layer_embeddings"):
        obj(Flat(), *BATCH)
    assert simgcl.check_backbone(_model(NGCF), "simgcl") is None
