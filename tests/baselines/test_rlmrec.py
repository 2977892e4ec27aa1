"""RLMRec-Con and RLMRec-Gen (llmhni_local.baselines.rlmrec): the alignment terms, the masking,
the shape checks, and a few epochs in the trainer on LightGCN and NGCF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmhni_local.baselines.rlmrec import (
    GRID,
    GRID_CON,
    GRID_GEN,
    RLMRecConObjective,
    RLMRecConSettings,
    RLMRecGenObjective,
    RLMRecGenSettings,
    info_nce_bank,
    info_nce_counted,
)
from llmhni_local.core.config import EvalSettings, TrainSettings
from llmhni_local.core.errors import ConfigError, DataError
from llmhni_local.data.dataset import Interactions
from llmhni_local.models import NGCF, LightGCN
from llmhni_local.train import losses
from llmhni_local.train.objectives import RecObjective
from llmhni_local.train.trainer import fit

N_USERS, N_ITEMS, D_S, DIM, LAYERS = 16, 24, 12, 8, 2
TS = TrainSettings(l2=1e-2, seed=3)



@pytest.fixture
def data(synth_data) -> Interactions:
    """``synth`` (16 users x 24 items, 8 each) with one pair per user held out for val, one
    for test."""
    d = synth_data(n_users=N_USERS, n_items=N_ITEMS)
    per_user = d.train.reshape(N_USERS, 8, 2)
    return Interactions("synth", N_USERS, N_ITEMS, per_user[:, 2:].reshape(-1, 2),
                        per_user[:, 0], per_user[:, 1])


def _sem(seed=1, d=D_S, n_users=N_USERS, n_items=N_ITEMS):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n_users, d)).astype(np.float32),
            rng.normal(size=(n_items, d)).astype(np.float32))


def _model(kind="lightgcn", seed=0):
    torch.manual_seed(seed)
    if kind == "lightgcn":
        return LightGCN(N_USERS, N_ITEMS, DIM, LAYERS)
    return NGCF(N_USERS, N_ITEMS, DIM, LAYERS, dropout=0.0)  # no dropout: comparable passes


def _con(edges, settings=None, ts=TS, out_dim=DIM, sem=None):
    su, si = sem if sem is not None else _sem()
    return RLMRecConObjective(edges, N_USERS, N_ITEMS, ts, settings or RLMRecConSettings(),
                              su, si, out_dim)


def _gen(edges, settings=None, ts=TS, dim=DIM, out_dim=DIM, sem=None):
    su, si = sem if sem is not None else _sem()
    return RLMRecGenObjective(edges, N_USERS, N_ITEMS, ts, settings or RLMRecGenSettings(),
                              su, si, out_dim, dim=dim)


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _batch(edges, seed=0):
    rng = np.random.default_rng(seed)
    return (torch.from_numpy(edges[:, 0]), torch.from_numpy(edges[:, 1]),
            torch.from_numpy(rng.integers(0, N_ITEMS, len(edges))))


# ----------------------------------------------------------------- settings, grid, errors
def test_defaults_are_the_authors_amazon_lightgcn_values():
    assert RLMRecConSettings() == RLMRecConSettings(kd_weight=1e-2, kd_temperature=0.2)
    assert RLMRecGenSettings() == RLMRecGenSettings(mask_ratio=0.15, recon_weight=0.1,
                                                    re_temperature=0.5)
    assert GRID == {"rlmrec_con": GRID_CON, "rlmrec_gen": GRID_GEN}
    assert GRID_CON["kd_weight"] == (1e-3, 1e-2, 1e-1)
    assert GRID_GEN["recon_weight"] == (0.01, 0.1, 1.0)


@pytest.mark.parametrize("cls,kw,name", [
    (RLMRecConSettings, {"kd_weight": -1.0}, "baselines.rlmrec_con.kd_weight"),
    (RLMRecConSettings, {"kd_temperature": 0.0}, "baselines.rlmrec_con.kd_temperature"),
    (RLMRecGenSettings, {"mask_ratio": 0.0}, "baselines.rlmrec_gen.mask_ratio"),
    (RLMRecGenSettings, {"mask_ratio": 1.0}, "baselines.rlmrec_gen.mask_ratio"),
    (RLMRecGenSettings, {"recon_weight": float("nan")}, "baselines.rlmrec_gen.recon_weight"),
    (RLMRecGenSettings, {"re_temperature": -0.1}, "baselines.rlmrec_gen.re_temperature"),
])
def test_bad_settings_name_the_setting(cls, kw, name):
    with pytest.raises(ConfigError, match=name):
        cls(**kw)


@pytest.mark.parametrize("make", [_con, _gen])
@pytest.mark.parametrize("sem", [
    _sem(n_users=N_USERS - 1), _sem(n_items=N_ITEMS + 2),
    (_sem()[0], _sem(d=D_S + 1)[1]), (np.zeros(N_USERS), np.zeros(N_ITEMS)),
])
def test_profile_shapes_that_do_not_fit_are_a_one_line_data_error(data, make, sem):
    with pytest.raises(DataError, match="do not match 16 users x 24 items") as err:
        make(data.train, sem=sem)
    assert "\n" not in str(err.value)


def test_non_finite_profiles_and_non_bpr_losses_are_refused(data):
    su, si = _sem()
    su[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        _con(data.train, sem=(su, si))
    with pytest.raises(ConfigError, match="train.loss must be 'bpr'"):
        _gen(data.train, ts=TrainSettings(loss="sgl"))


def test_widths_that_do_not_fit_the_model_are_a_config_error(data):
    users, pos, neg = _batch(data.train)
    ngcf = _model("ngcf")
    with pytest.raises(ConfigError, match="out_dim 8 but the model's is 24"):
        _con(data.train)(ngcf, users, pos, neg)
    with pytest.raises(ConfigError, match="out_dim 8 but the model's is 24"):
        _gen(data.train)(ngcf, users, pos, neg)
    with pytest.raises(ConfigError, match="dim 16 but the model's is 8"):
        _gen(data.train, dim=16, out_dim=48)(ngcf, users, pos, neg)
    su, si = _sem()  # out_dim alone (positional): dim defaults to it, right for LightGCN only
    gen = RLMRecGenObjective(data.train, N_USERS, N_ITEMS, TS, RLMRecGenSettings(), su, si, 24)
    assert (gen.dim, gen.out_dim) == (24, 24)
    with pytest.raises(ConfigError, match="dim 24 but the model's is 8"):
        gen(ngcf, users, pos, neg)
    con = RLMRecConObjective(data.train, N_USERS, N_ITEMS, TS, RLMRecConSettings(), su, si, 24)
    assert np.isfinite(_f(con(ngcf, users, pos, neg).total))


def test_weights_come_from_train_seed_and_leave_torchs_generator_alone(data):
    """Building an objective draws nothing from torch's global generator (the model built
    after it starts as it would for plain BPR), and the MLP's start depends on train.seed."""
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    a, b = _gen(data.train), _con(data.train)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), _gen(data.train).parameters()))
    other = _gen(data.train, ts=TrainSettings(l2=1e-2, seed=4))
    assert not torch.equal(a.net.mlp[0].weight, other.net.mlp[0].weight)
    assert _f(a.net.mask_token.abs().sum()) == 0.0  # the authors' zero token
    assert [p.shape for p in b.parameters()] == [(10, D_S), (10,), (DIM, 10), (DIM,)]


# ----------------------------------------------------------------- weight 0 is plain BPR + L2
@pytest.mark.parametrize("kind", ["lightgcn", "ngcf"])
@pytest.mark.parametrize("method", ["con", "gen"])
def test_weight_zero_is_rec_objectives_bpr_plus_l2(data, kind, method):
    model = _model(kind)
    out_dim = model.out_dim
    obj = (_con(data.train, RLMRecConSettings(kd_weight=0.0), out_dim=out_dim) if method == "con"
           else _gen(data.train, RLMRecGenSettings(recon_weight=0.0), out_dim=out_dim))
    batch = _batch(data.train)
    ours = obj(model, *batch)
    plain = RecObjective(data.train, N_USERS, N_ITEMS, TS)(model, *batch)
    assert _f(ours.total) == pytest.approx(_f(plain.total), rel=1e-6)
    assert ours.parts == pytest.approx(plain.parts, rel=1e-6)
    on = (_con(data.train, out_dim=out_dim) if method == "con"
          else _gen(data.train, out_dim=out_dim))(model, *batch)
    assert _f(on.total) != pytest.approx(_f(plain.total), rel=1e-4)


# ----------------------------------------------------------------- RLMRec-Con
def test_con_alignment_falls_when_only_the_kd_term_trains_on_fixed_embeddings(data):
    obj = _con(data.train)
    g = torch.Generator().manual_seed(0)
    u_emb, i_emb = torch.randn(N_USERS, DIM, generator=g), torch.randn(N_ITEMS, DIM, generator=g)
    users, pos, neg = _batch(data.train)
    opt = torch.optim.Adam(obj.parameters(), lr=1e-2)
    history = []
    for _ in range(60):
        kd = obj.kd_loss(u_emb, i_emb, users, pos, neg)
        opt.zero_grad()
        kd.backward()
        opt.step()
        history.append(_f(kd))
    assert history[-1] < 0.7 * history[0]


@pytest.mark.parametrize("shuffle", ["users", "items"])
def test_con_loss_is_lower_for_the_profiles_own_image_than_for_shuffled_rows(data, shuffle):
    """Each side's pairing counts: shuffling only users' (or only items') CF rows raises it."""
    obj = _con(data.train)
    with torch.no_grad():  # CF embeddings that are exactly the mapped profiles
        u_emb, i_emb = obj.net.mlp(obj.s_user), obj.net.mlp(obj.s_item)
    users, pos, neg = _batch(data.train)
    aligned = _f(obj.kd_loss(u_emb, i_emb, users, pos, neg))
    g = torch.Generator().manual_seed(1)
    if shuffle == "users":
        u_emb = u_emb[torch.randperm(N_USERS, generator=g)]
    else:
        i_emb = i_emb[torch.randperm(N_ITEMS, generator=g)]
    assert aligned < _f(obj.kd_loss(u_emb, i_emb, users, pos, neg)) - 1.0


def test_con_kd_is_the_authors_three_infonce_terms(data):
    """A direct computation in float64: users against all users' mapped profiles, positive
    and negative items against the batch's, each ``-cos/tau + log sum exp(cos/tau)`` summed
    over the batch and divided by its size."""
    obj = _con(data.train, RLMRecConSettings(kd_temperature=0.3))
    g = torch.Generator().manual_seed(4)
    u_emb, i_emb = torch.randn(N_USERS, DIM, generator=g), torch.randn(N_ITEMS, DIM, generator=g)
    rng = np.random.default_rng(2)  # uneven counts, and user 0 in no row (yet a negative)
    kept = data.train[data.train[:, 0] != 0]
    users, pos, neg = _batch(kept[rng.choice(len(kept), 40)], seed=2)
    with torch.no_grad():
        fu, fi = obj.net.mlp(obj.s_user).double(), obj.net.mlp(obj.s_item).double()

    def term(anchors, positives, candidates):
        cos = torch.nn.functional.cosine_similarity
        total = 0.0
        for a, p in zip(anchors, positives):
            total -= float(cos(a, p, dim=0)) / 0.3
            total += float(torch.logsumexp(cos(a[None], candidates, dim=1) / 0.3, 0))
        return total / len(anchors)

    u, i = u_emb.double(), i_emb.double()
    expected = (term(u[users], fu[users], fu) + term(i[pos], fi[pos], fi[pos])
                + term(i[neg], fi[neg], fi[neg]))
    assert _f(obj.kd_loss(u_emb, i_emb, users, pos, neg)) == pytest.approx(expected, rel=1e-5)


def test_con_loss_is_lower_for_a_linear_image_of_the_profiles_after_training(data):
    """CF embeddings ``s W``: the MLP learns to map profiles onto them; it cannot for rows
    shuffled between nodes (4-dim profiles: no map of them follows a permutation of 40
    nodes). The batch's nodes are distinct, so no duplicate is a false negative."""
    g = torch.Generator().manual_seed(2)
    sem = _sem(d=4)
    w = torch.randn(4, DIM, generator=g)
    cf_u, cf_i = torch.from_numpy(sem[0]) @ w, torch.from_numpy(sem[1]) @ w
    users, pos, neg = torch.arange(16), torch.arange(16), torch.arange(8, 24)
    finals = []
    for perm_u, perm_i in ((torch.arange(N_USERS), torch.arange(N_ITEMS)),
                           (torch.randperm(N_USERS, generator=g),
                            torch.randperm(N_ITEMS, generator=g))):
        obj = _con(data.train, sem=sem)
        opt = torch.optim.Adam(obj.parameters(), lr=1e-2)
        for _ in range(150):
            kd = obj.kd_loss(cf_u[perm_u], cf_i[perm_i], users, pos, neg)
            opt.zero_grad()
            kd.backward()
            opt.step()
        finals.append(_f(obj.kd_loss(cf_u[perm_u], cf_i[perm_i], users, pos, neg)))
    assert finals[0] < finals[1] - 1.0


def test_con_user_term_has_every_user_in_its_denominator(data):
    """A user outside the batch still changes the loss: the authors' user term contrasts
    against all users' mapped profiles, not the batch's."""
    su, si = _sem()
    edges = data.train[data.train[:, 0] != 0]  # user 0 is in no batch row
    users, pos, neg = _batch(edges)
    g = torch.Generator().manual_seed(0)
    u_emb, i_emb = torch.randn(N_USERS, DIM, generator=g), torch.randn(N_ITEMS, DIM, generator=g)
    base = _f(_con(edges, sem=(su, si)).kd_loss(u_emb, i_emb, users, pos, neg))
    su2 = su.copy()
    su2[0] = -su[1] * 3
    moved = _f(_con(edges, sem=(su2, si)).kd_loss(u_emb, i_emb, users, pos, neg))
    assert moved != pytest.approx(base, abs=1e-6)


# ----------------------------------------------------------------- RLMRec-Gen
@pytest.mark.parametrize("ratio,count", [(0.25, 10), (0.15, 6), (0.01, 1)])
def test_gen_masks_the_share_it_says_with_the_token(data, ratio, count):
    obj = _gen(data.train, RLMRecGenSettings(mask_ratio=ratio))
    seeds = obj.draw_mask()
    assert len(seeds) == len(torch.unique(seeds)) == count
    with torch.no_grad():
        obj.net.mask_token.fill_(7.0)
    table = _model().embedding.weight
    masked = obj.masked_ego(table, seeds)
    is_masked = torch.zeros(N_USERS + N_ITEMS, dtype=torch.bool)
    is_masked[seeds] = True
    assert (masked[is_masked] == 7.0).all()
    assert torch.equal(masked[~is_masked], table[~is_masked])


@pytest.mark.parametrize("kind", ["lightgcn", "ngcf"])
def test_gen_scores_bpr_and_reconstruction_on_the_masked_pass(data, kind):
    model = _model(kind)
    obj = _gen(data.train, out_dim=model.out_dim)
    batch = _batch(data.train)
    obj.mask_rng = np.random.default_rng(5)
    out = obj(model, *batch)
    out.total.backward()
    assert obj.net.mask_token.grad.abs().sum() > 0  # the token is in the propagation
    obj.mask_rng = np.random.default_rng(5)  # the same draw again
    seeds = obj.draw_mask()
    u_m, i_m = obj.masked_forward(model, seeds)
    rec_m, _ = obj.rec_l2(model, u_m, i_m, *batch)
    rec_plain, _ = obj.rec_l2(model, *model(obj.adj), *batch)
    assert out.parts["rec"] == pytest.approx(_f(rec_m), rel=1e-6)
    assert out.parts["rec"] != pytest.approx(_f(rec_plain), rel=1e-4)
    assert out.parts["gen"] == pytest.approx(
        _f(obj.reconstruction(torch.cat([u_m, i_m]), seeds)), rel=1e-6)


def test_gen_reconstruction_reads_the_masked_nodes_only(data):
    obj = _gen(data.train, RLMRecGenSettings(mask_ratio=0.25))
    seeds = obj.draw_mask()
    final = torch.randn(N_USERS + N_ITEMS, DIM, generator=torch.Generator().manual_seed(0))
    base = _f(obj.reconstruction(final, seeds))
    others = torch.ones(N_USERS + N_ITEMS, dtype=torch.bool)
    others[seeds] = False
    moved = final.clone()
    moved[others] = moved[others] * -5 + 1
    assert _f(obj.reconstruction(moved, seeds)) == pytest.approx(base, rel=1e-6)
    moved = final.clone()
    moved[seeds[:2]] = moved[seeds[:2]] * -5 + 1
    assert _f(obj.reconstruction(moved, seeds)) != pytest.approx(base, rel=1e-4)


def test_gen_reconstruction_is_the_authors_infonce_over_the_masked_set(data):
    """A direct computation in float64 of ``ssl_con_loss``: each masked node's mapped final
    embedding against its own profile, the other masked nodes' profiles as negatives."""
    obj = _gen(data.train, RLMRecGenSettings(mask_ratio=0.25, re_temperature=0.7))
    seeds = obj.draw_mask()
    final = torch.randn(N_USERS + N_ITEMS, DIM, generator=torch.Generator().manual_seed(3))
    profiles = torch.from_numpy(np.concatenate(_sem())).double()
    with torch.no_grad():
        mapped = obj.net.mlp(final).double()
    cos = torch.nn.functional.cosine_similarity
    expected = 0.0
    for k in seeds.tolist():
        expected -= float(cos(mapped[k], profiles[k], dim=0)) / 0.7
        expected += float(torch.logsumexp(cos(mapped[k][None], profiles[seeds], dim=1) / 0.7, 0))
    expected /= len(seeds)
    assert _f(obj.reconstruction(final, seeds)) == pytest.approx(expected, rel=1e-5)


def test_gen_reconstruction_falls_with_training(data):
    model = _model()
    obj = _gen(data.train)
    seeds = obj.draw_mask()
    opt = torch.optim.Adam([*model.parameters(), *obj.parameters()], lr=1e-2)
    history = []
    for _ in range(60):
        u, i = obj.masked_forward(model, seeds)
        gen = obj.reconstruction(torch.cat([u, i]), seeds)
        opt.zero_grad()
        gen.backward()
        opt.step()
        history.append(_f(gen))
    assert history[-1] < 0.7 * history[0]


def test_gen_masks_are_seeded_by_seed_and_epoch(data):
    obj = _gen(data.train)
    rng = np.random.default_rng(0)
    obj.start_epoch(1, rng)
    a = obj.draw_mask()
    assert not torch.equal(a, obj.draw_mask())  # a new draw each batch
    obj.start_epoch(1, rng)
    assert torch.equal(a, obj.draw_mask())
    obj.start_epoch(2, rng)
    assert not torch.equal(a, obj.draw_mask())


# ----------------------------------------------------------------- in the trainer
@pytest.mark.parametrize("kind", ["lightgcn", "ngcf"])
@pytest.mark.parametrize("method", ["con", "gen"])
def test_trains_a_few_epochs_with_the_objectives_weights(data, kind, method):
    model = _model(kind)
    ts = TrainSettings(epochs=3, batch_size=32, eval_every=1, l2=1e-4, device="cpu", seed=0)
    obj = (_con(data.train, ts=ts, out_dim=model.out_dim) if method == "con"
           else _gen(data.train, ts=ts, dim=DIM, out_dim=model.out_dim))
    before = [p.detach().clone() for p in obj.parameters()]
    res = fit(model, data, obj, train=ts, eval=EvalSettings(ks=(5,)), progress=False)
    key = "kd" if method == "con" else "gen"
    assert len(res.history) == 3
    assert all(np.isfinite(h["loss"]) and key in h and "rec" in h for h in res.history)
    assert all(not torch.equal(b, p) for b, p in zip(before, obj.parameters()))
    assert obj.to("cpu") is obj


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["con", "gen"])
def test_to_cuda_moves_profiles_and_weights(data, method):
    model = _model("ngcf")
    obj = (_con(data.train, out_dim=model.out_dim) if method == "con"
           else _gen(data.train, out_dim=model.out_dim))
    params = obj.parameters()
    assert obj.to("cuda") is obj
    assert all(p.is_cuda for p in obj.parameters()) and obj.s_user.is_cuda
    assert all(a is b for a, b in zip(params, obj.parameters()))  # the optimiser's tensors
    out = obj(model.to("cuda"), *(t.cuda() for t in _batch(data.train)))
    assert out.total.is_cuda and np.isfinite(_f(out.total))


def test_counted_infonce_equals_the_expanded_batchs():
    """The distinct-rows forms give the value of the row-by-row batch with its duplicates."""
    g = torch.Generator().manual_seed(0)
    a, b, bank = (torch.randn(n, 4, generator=g) for n in (5, 5, 7))
    counts = torch.tensor([1, 3, 2, 1, 4])
    rows = torch.repeat_interleave(torch.arange(5), counts)
    assert _f(info_nce_counted(a, b, counts.float(), 0.3)) == pytest.approx(
        _f(losses.info_nce(a[rows], b[rows], 0.3)), rel=1e-5)
    targets = torch.tensor([0, 6, 2, 2, 5])
    assert _f(info_nce_bank(a, bank, targets, 0.3, counts.float())) == pytest.approx(
        _f(info_nce_bank(a[rows], bank, targets[rows], 0.3)), rel=1e-5)
