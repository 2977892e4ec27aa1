import math

import numpy as np
import pytest
import torch

from llmhni_local.baselines.simgcl import noise_perturbation
from llmhni_local.baselines.xsimgcl import GRID, XSimGCLObjective, XSimGCLSettings
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
USERS, POS = torch.unique(BATCH[0]), torch.unique(BATCH[1])



def _model(cls, layers=2, seed=0):
    torch.manual_seed(seed)
    return cls(N_USERS, N_ITEMS, dim=8, layers=layers)


def _spy(monkeypatch):
    """Record every ``losses.info_nce`` call's two views and still compute it."""
    calls = []

    def spy(a, b, t):
        calls.append((a.detach().clone(), b.detach().clone(), t))
        return INFO_NCE(a, b, t)

    monkeypatch.setattr(losses, "info_nce", spy)
    return calls


def _one_propagation(model, adj, eps, seed):
    """What the objective should see: one perturbed propagation under ``seed``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        layers = model.layer_embeddings(adj, noise_perturbation(eps))
        return layers, model.combine(layers)


@pytest.mark.parametrize("layer", [1, 2])
def test_lightgcn_contrast_is_final_against_the_named_layer_of_one_propagation(layer, monkeypatch):
    calls = _spy(monkeypatch)
    s = XSimGCLSettings(eps=0.2, weight=0.2, temp=0.15, layer=layer, warmup=0)
    obj = XSimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, s)
    model = _model(LightGCN)
    n_props = []
    real = model.layer_embeddings
    monkeypatch.setattr(model, "layer_embeddings", lambda *a: n_props.append(1) or real(*a))
    torch.manual_seed(4)
    out = obj(model, *BATCH)
    assert len(n_props) == 1  # ONE propagation per batch
    layers, (fu, fi) = _one_propagation(model, obj.adj, 0.2, 4)
    (a_u, b_u, t_u), (a_i, b_i, t_i) = calls
    assert t_u == t_i == 0.15
    assert torch.allclose(a_u, fu[USERS]) and torch.allclose(a_i, fi[POS])
    assert torch.allclose(b_u, layers[layer][:N_USERS][USERS])
    assert torch.allclose(b_i, layers[layer][N_USERS:][POS])
    expected = INFO_NCE(fu[USERS], layers[layer][:N_USERS][USERS], 0.15) + INFO_NCE(
        fi[POS], layers[layer][N_USERS:][POS], 0.15)
    assert out.parts["cl"] == pytest.approx(float(expected), rel=1e-5)
    # BPR reads the perturbed final embeddings, not the clean ones.
    eu = fu[BATCH[0]]
    rec = losses.bpr((eu * fi[BATCH[1]]).sum(-1), (eu * fi[BATCH[2]]).sum(-1)).mean()
    assert out.parts["rec"] == pytest.approx(float(rec), rel=1e-5)
    p = out.parts
    assert float(out.total.detach()) == pytest.approx(p["rec"] + p["l2"] + 0.2 * p["cl"], rel=1e-5)
    with torch.no_grad():
        cu, _ = model(obj.adj)
    assert not torch.allclose(cu, fu, atol=1e-4)


def test_the_contrast_changes_with_the_layer():
    model = _model(LightGCN)
    cl = {}
    for layer in (0, 1, 2):
        obj = XSimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, XSimGCLSettings(layer=layer))
        torch.manual_seed(4)  # the same noise for every layer
        cl[layer] = obj(model, *BATCH).parts["cl"]
    assert len({round(v, 6) for v in cl.values()}) == 3


@pytest.mark.parametrize("layer", [0, 1])
def test_ngcf_contrasts_the_named_layer_with_the_last_one(layer, monkeypatch):
    calls = _spy(monkeypatch)
    obj = XSimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, XSimGCLSettings(layer=layer))
    model = _model(NGCF)  # training mode: dropout draws are replayed by the seed too
    torch.manual_seed(9)
    out = obj(model, *BATCH)
    layers, _ = _one_propagation(model, obj.adj, 0.2, 9)
    (a_u, b_u, _), (a_i, b_i, _) = calls
    assert a_u.shape == b_u.shape == (len(USERS), 8)
    assert torch.allclose(a_u, layers[-1][:N_USERS][USERS])
    assert torch.allclose(b_u, layers[layer][:N_USERS][USERS])
    assert torch.allclose(a_i, layers[-1][N_USERS:][POS])
    assert torch.allclose(b_i, layers[layer][N_USERS:][POS])
    assert math.isfinite(out.parts["cl"])


def test_a_layer_the_model_lacks_or_ngcf_last_layer_is_an_error():
    obj = XSimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, XSimGCLSettings(layer=3))
    with pytest.raises(ConfigError, match="baselines.xsimgcl.layer"):
        obj(_model(LightGCN), *BATCH)
    obj = XSimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, XSimGCLSettings(layer=2))
    with pytest.raises(ConfigError, match="below"):
        obj(_model(NGCF), *BATCH)
    assert math.isfinite(obj(_model(LightGCN), *BATCH).parts["cl"])  # fine on LightGCN


@pytest.mark.parametrize("cls", [LightGCN, NGCF])
def test_no_noise_and_no_weight_is_exactly_rec_objective_bpr(cls):
    ts = TrainSettings(l2=1e-2, loss="bpr")
    ours = XSimGCLObjective(EDGES, N_USERS, N_ITEMS, ts, XSimGCLSettings(eps=0.0, weight=0.0))
    plain = RecObjective(EDGES, N_USERS, N_ITEMS, ts)
    model = _model(cls)
    torch.manual_seed(3)
    a = ours(model, *BATCH)
    torch.manual_seed(3)
    b = plain(model, *BATCH)
    assert float(a.total.detach()) == pytest.approx(float(b.total.detach()), rel=1e-6)
    assert a.parts == pytest.approx(b.parts) and "cl" not in a.parts


def test_the_contrastive_weight_warms_up_linearly():
    obj = XSimGCLObjective(EDGES, N_USERS, N_ITEMS, TS, XSimGCLSettings(weight=0.2, warmup=4))
    model = _model(LightGCN)
    for epoch, share in ((1, 0.0), (3, 0.5), (5, 1.0)):
        obj.start_epoch(epoch, np.random.default_rng(0))
        out = obj(model, *BATCH)
        p = out.parts
        assert float(out.total.detach()) == pytest.approx(p["rec"] + p["l2"] + share * 0.2 * p["cl"],
                                                          rel=1e-5)


@pytest.mark.parametrize("cls", [LightGCN, NGCF])
def test_fit_trains_with_a_finite_falling_loss_and_evaluates_unperturbed(
        cls, fits_and_evaluates_clean):
    def make(data, ts):
        return XSimGCLObjective(data.train, data.n_users, data.n_items, ts,
                                XSimGCLSettings(warmup=0))

    fits_and_evaluates_clean(make, cls, 0.8)


def test_settings_defaults_grid_and_checks():
    s = XSimGCLSettings()
    assert (s.eps, s.weight, s.temp, s.layer, s.warmup) == (0.2, 0.1, 0.15, 1, 10)
    assert 1 <= len(GRID) <= 2 and all(1 <= len(v) <= 3 for v in GRID.values())
    assert set(GRID) <= {"eps", "weight", "temp", "layer"}
    assert build(XSimGCLSettings, {"layer": 2, "temp": 0.2}) == XSimGCLSettings(temp=0.2, layer=2)
    for bad in ({"eps": -0.1}, {"weight": -1.0}, {"temp": 0.0}, {"layer": -1}, {"warmup": -1}):
        with pytest.raises(ConfigError, match=f"baselines.xsimgcl.{next(iter(bad))}"):
            XSimGCLSettings(**bad)
