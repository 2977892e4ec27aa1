"""BOD (llmhni_local.baselines.bod): the weighted inner loss, the outer step that learns the
generator, and what the learnt weights do with injected noise."""

import math

import numpy as np
import pytest
import torch

from llmhni_local.baselines.bod import (
    GRID,
    BODObjective,
    BODSettings,
    alignment,
    batch_uniformity,
    gradient_distance,
    uniformity,
)
from llmhni_local.core.config import EvalSettings, TrainSettings
from llmhni_local.core.errors import ConfigError
from llmhni_local.data.dataset import Interactions
from llmhni_local.data.noise import add_synthetic_noise
from llmhni_local.models import NGCF, LightGCN
from llmhni_local.train.objectives import RecObjective
from llmhni_local.train.samplers import UniformNegatives
from llmhni_local.train.trainer import fit, seed_everything, train_epoch

TS = TrainSettings(l2=1e-2, device="cpu")
CPU = torch.device("cpu")



def _clustered(seed=0, groups=4, users_per=8, items_per=10, per_user=6, held_out=0):
    """Users in ``groups``, each interacting with ``per_user`` of its group's items only: the
    structure a recommender can learn, which random noise pairs break. (The ``synth_data``
    fixture draws every user's items at random, so its clean pairs are as random as injected
    ones and no weighting can tell them apart.) ``held_out`` pairs per user go to val/test."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for g in range(groups):
        for k in range(users_per):
            u = g * users_per + k
            items = [g * items_per + int(i) for i in rng.choice(items_per, per_user, replace=False)]
            train += [(u, i) for i in items[held_out:]]
            val += [(u, i) for i in items[:held_out][:1]]
            test += [(u, i) for i in items[:held_out][1:]]
    val, test = (np.array(x, dtype=np.int64).reshape(-1, 2) for x in (val, test))
    return Interactions("clustered", groups * users_per, groups * items_per,
                        np.array(train, dtype=np.int64), val, test)


def _batch(edges, n_items, seed=0):
    rng = np.random.default_rng(seed)
    neg = UniformNegatives(edges, n_items).sample(edges[:, 0], rng)
    return (torch.from_numpy(edges[:, 0]), torch.from_numpy(edges[:, 1]),
            torch.as_tensor(np.asarray(neg)))


def _train(data, settings, epochs, *, seed=0, model_cls=LightGCN, batch_size=64):
    """``epochs`` of the trainer's own epoch loop; returns the model, the objective and the
    weights of the training pairs after the first and the last epoch."""
    rng = seed_everything(seed)
    model = model_cls(data.n_users, data.n_items, dim=16, layers=2)
    obj = BODObjective(data.train, data.n_users, data.n_items, TrainSettings(device="cpu"),
                       settings)
    sampler = UniformNegatives(data.train, data.n_items)
    opt = torch.optim.Adam([*model.parameters(), *obj.parameters()], lr=1e-3)
    first = None
    for epoch in range(1, epochs + 1):
        train_epoch(model, obj, sampler, opt, epoch, rng, batch_size=batch_size, device=CPU)
        if epoch == 1:
            first = obj.edge_weights(data.train)
    return model, obj, first, obj.edge_weights(data.train)


# ----------------------------------------------------------------- settings
def test_settings_defaults_grid_and_validation():
    s = BODSettings()
    assert (s.generator_lr, s.hidden, s.outer_steps, s.align_weight, s.uniform_weight) == \
        (1e-3, 64, 1, 1.0, 0.5)
    assert set(GRID) == {"generator_lr"} and len(GRID["generator_lr"]) <= 3
    for bad, name in (({"generator_lr": 0.0}, "generator_lr"), ({"hidden": 0}, "hidden"),
                      ({"outer_steps": -1}, "outer_steps"),
                      ({"uniform_weight": -1.0}, "uniform_weight")):
        with pytest.raises(ConfigError, match=f"baselines.bod.{name}"):
            BODSettings(**bad)


# ----------------------------------------------------------------- the pieces
def test_uniformity_and_alignment_match_their_definitions():
    x = torch.randn(30, 5, dtype=torch.float64)
    z = torch.nn.functional.normalize(x, dim=1)
    ref = torch.pdist(z).pow(2).mul(-2).exp().mean().log()
    assert torch.allclose(uniformity(x), ref)
    y = torch.randn(30, 5, dtype=torch.float64)
    zy = torch.nn.functional.normalize(y, dim=1)
    assert torch.allclose(alignment(x, y), ((z - zy) ** 2).sum(1))
    rep = torch.cat([x[:3], x[:3]]).requires_grad_()  # repeated rows: finite gradient
    uniformity(rep).backward()
    assert torch.isfinite(rep.grad).all()
    # distinct rows with counts = the rows repeated, value and gradient
    idx = torch.tensor([0, 2, 2, 5, 0, 0, 7])
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    va, vb = uniformity(a[idx]), batch_uniformity(b, idx)
    va.backward(), vb.backward()
    assert torch.allclose(va, vb) and torch.allclose(a.grad, b.grad)


def test_gradient_distance_is_zero_for_parallel_columns_and_skips_vectors():
    a = torch.randn(6, 3)
    parallel = gradient_distance([a, torch.ones(3)], [2 * a, -torch.ones(3)])
    assert float(parallel) == pytest.approx(0, abs=1e-5)
    # opposite columns: 2 per column
    assert float(gradient_distance([a], [-a])) == pytest.approx(6.0, abs=1e-4)


# ----------------------------------------------------------------- the inner loss
def test_weights_of_one_give_plain_bpr_and_other_weights_weigh_each_pair():
    data = _clustered()
    users, pos, neg = _batch(data.train, data.n_items)
    torch.manual_seed(0)
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=2)
    plain = RecObjective(data.train, data.n_users, data.n_items, TS)(model, users, pos, neg)
    obj = BODObjective(data.train, data.n_users, data.n_items, TS,
                       BODSettings(align_weight=0.0, uniform_weight=0.0))
    obj.edge_weights(data.train[:1], model)  # builds the generator
    obj.generator.forward = lambda eu, ei: torch.ones(len(eu))
    out = obj(model, users, pos, neg)
    assert float(out.total.detach()) == pytest.approx(float(plain.total.detach()), rel=1e-6)
    assert out.parts["rec"] == pytest.approx(plain.parts["rec"], rel=1e-6)
    assert out.parts["weight_mean"] == 1.0
    # weights of one's own: the BPR term of each pair is scaled by its weight
    w = torch.linspace(0.0, 1.0, len(users))
    obj.generator.forward = lambda eu, ei: w
    with torch.no_grad():
        u_emb, i_emb = model(obj.adj)
    per_pair = -torch.nn.functional.logsigmoid((u_emb[users] * (i_emb[pos] - i_emb[neg])).sum(1))
    rec = obj(model, users, pos, neg).parts["rec"]
    assert rec == pytest.approx(float((w * per_pair).mean()), rel=1e-5)


# ----------------------------------------------------------------- the outer step
def test_outer_step_moves_the_generator_and_leaves_the_recommender_alone():
    data = _clustered()
    users, pos, neg = _batch(data.train, data.n_items)
    torch.manual_seed(0)
    model = NGCF(data.n_users, data.n_items, dim=8, layers=2)
    obj = BODObjective(data.train, data.n_users, data.n_items, TS, BODSettings())
    before_w = obj.edge_weights(data.train, model)
    gen_before = [p.detach().clone() for p in obj.generator.parameters()]
    rec_before = [p.detach().clone() for p in model.parameters()]
    loss = obj.outer_step(model, users, pos, neg)
    assert math.isfinite(loss) and obj.outer_steps_done == 1
    assert all(not torch.equal(a, b) for a, b in zip(gen_before, obj.generator.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(rec_before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert not np.allclose(before_w, obj.edge_weights(data.train, model))


def test_the_trainer_optimiser_never_touches_the_generator():
    data = _clustered()
    model, obj, _, _ = _train(data, BODSettings(outer_steps=0), 3)
    assert obj.parameters() == [] and obj.outer_steps_done == 0
    gen = [p.detach().clone() for p in obj.generator.parameters()]
    before = model.embedding.weight.detach().clone()
    opt = torch.optim.Adam([*model.parameters(), *obj.parameters()], lr=1e-3)
    train_epoch(model, obj, UniformNegatives(data.train, data.n_items), opt, 4,
                np.random.default_rng(0), batch_size=64, device=CPU)
    assert not torch.equal(before, model.embedding.weight)
    assert all(torch.equal(a, b) for a, b in zip(gen, obj.generator.parameters()))


def test_outer_steps_run_once_per_epoch_after_the_first():
    data = _clustered()
    _, obj, _, _ = _train(data, BODSettings(outer_steps=2), 4)  # 4 batches an epoch here
    assert obj.outer_steps_done == 2 * 3


# ----------------------------------------------------------------- what the weights learn
@pytest.mark.parametrize("seed", [0, 1])
def test_learnt_weights_spread_out_and_put_injected_pairs_below_clean_ones(seed):
    # An outer step on every batch (the released one a batch per epoch moves the generator
    # 40 times less), 60 epochs of 4 batches on 4 groups of 8 users with 30% noise.
    data = add_synthetic_noise(_clustered(seed), 0.3, seed)
    noise = data.train_noise
    *_, first, last = _train(data, BODSettings(outer_steps=100), 60, seed=seed)
    assert last.std() > 20 * first.std()  # from near-uniform (std ~0.002) to spread out
    assert last[noise].mean() < last[~noise].mean() - 0.05


# ----------------------------------------------------------------- end to end
@pytest.mark.parametrize("model_cls", [LightGCN, NGCF])
def test_fit_runs_on_both_backbones_with_finite_loss(model_cls):
    data = _clustered(held_out=2)
    ts = TrainSettings(epochs=6, batch_size=64, eval_every=3, min_epochs=1, device="cpu")
    obj = BODObjective(data.train, data.n_users, data.n_items, ts, BODSettings(outer_steps=2))
    torch.manual_seed(0)
    model = model_cls(data.n_users, data.n_items, dim=8, layers=2)
    res = fit(model, data, obj, train=ts, eval=EvalSettings(ks=(5,)), progress=False)
    assert len(res.history) == 6 and all(math.isfinite(r["loss"]) for r in res.history)
    assert {"rec", "l2", "align", "uniform", "weight_mean", "weight_std"} <= set(res.history[0])
    assert "outer" not in res.history[0] and math.isfinite(res.history[-1]["outer"])
    assert obj.outer_steps_done == 2 * 5
    assert obj.generator.net[0].in_features == 2 * model.out_dim
