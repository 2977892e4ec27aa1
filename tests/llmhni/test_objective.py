import math

import numpy as np
import pytest
import torch

from llmhni_local.core.config import EvalSettings, TrainSettings
from llmhni_local.core.errors import ConfigError
from llmhni_local.data.dataset import Interactions
from llmhni_local.llmhni.objective import LLMHNIObjective
from llmhni_local.llmhni.settings import LLMHNISettings
from llmhni_local.models import NGCF, LightGCN
from llmhni_local.train.trainer import fit

N_USERS, N_ITEMS = 5, 8
G = np.array([[0, 0], [0, 1], [0, 2], [1, 1], [1, 3], [2, 2], [2, 4], [2, 5], [3, 0], [3, 6],
              [4, 5], [4, 7], [1, 6], [3, 3]])
G_PRIME = np.array([e for e in G.tolist() if e not in ([0, 1], [2, 5])] + [[1, 0], [4, 2]])
TS = TrainSettings(l2=1e-2)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads; on a shared 2-core machine two threads made
    these tests ten times slower (intra-op threads waiting on each other)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _z(seed=0, d=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N_USERS, d)).astype(np.float32), rng.normal(size=(N_ITEMS, d)).astype(np.float32)


def _objective(settings=None, **kw):
    s = settings or LLMHNISettings(**{"contrast_warmup": 0, **kw})
    zu, zi = _z()
    return LLMHNIObjective(G, G_PRIME, N_USERS, N_ITEMS, TS, s, z_user=zu, z_item=zi)


def _batch(obj, seed=0):
    rng = np.random.default_rng(seed)
    pos_pairs = obj.positives
    users, pos = pos_pairs[:, 0], pos_pairs[:, 1]
    pool = obj.make_sampler().sample(users, rng)
    return torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(pool)


# ----------------------------------------------------------------- a direct computation
def _dense_norm_adj(edges):
    n = N_USERS + N_ITEMS
    a = np.zeros((n, n))
    for u, i in edges:
        a[u, N_USERS + i] = a[N_USERS + i, u] = 1.0
    deg = a.sum(1)
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    return torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float64)


def _lightgcn_dense(model, edges):
    a = _dense_norm_adj(edges)
    x = model.embedding.weight.detach().double()
    out, h = x.clone(), x
    for _ in range(model.layers):
        h = a @ h
        out = out + h
    out = out / (model.layers + 1)
    return out[:N_USERS], out[N_USERS:]


def _info_nce_direct(a, b, tau):
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    total = 0.0
    for k in range(len(a)):
        num = math.exp(float(a[k] @ b[k]) / tau)
        den = sum(math.exp(float(a[k] @ b[j]) / tau) for j in range(len(b)))
        total += -math.log(num / den)
    return total / len(a)


def _reference(obj, model, users, pos, pool):
    s, l2 = obj.settings, obj.train_settings.l2
    u_gp, i_gp = _lightgcn_dense(model, obj.edges_Gprime)
    zu, zi = _z()
    zu = zu / np.linalg.norm(zu, axis=1, keepdims=True)
    zi = zi / np.linalg.norm(zi, axis=1, keepdims=True)
    thr = {}
    for u in range(N_USERS):
        sims = [float(zu[u] @ zi[i]) for uu, i in obj.edges_Gprime.tolist() if uu == u]
        thr[u] = np.quantile(sims, s.threshold_quantile) if sims else np.inf
    negs, flagged = [], 0
    for r, u in enumerate(users.tolist()):
        cand = pool[r].tolist()
        sc = [float(u_gp[u] @ i_gp[j]) for j in cand]
        sim = [float(zu[u] @ zi[j]) for j in cand]
        low = [k for k in range(len(cand)) if sim[k] < thr[u]]
        k = max(low, key=lambda k: (sc[k], -k)) if low else min(range(len(cand)), key=lambda k: (sim[k], k))
        negs.append(cand[k])
        flagged += sum(x > sc[k] for x in sc)
    rec = np.mean([math.log1p(math.exp(-(float(u_gp[u] @ i_gp[p]) - float(u_gp[u] @ i_gp[n]))))
                   for u, p, n in zip(users.tolist(), pos.tolist(), negs)])
    w = model.embedding.weight.detach().double()
    sq = sum(float(w[u].pow(2).sum() + w[N_USERS + p].pow(2).sum() + w[N_USERS + n].pow(2).sum())
             for u, p, n in zip(users.tolist(), pos.tolist(), negs))
    reg = l2 * sq / (2 * len(negs))
    uu, ii = sorted(set(users.tolist())), sorted(set(pos.tolist()))
    u_g, i_g = _lightgcn_dense(model, obj.edges_G)
    de = _info_nce_direct(u_g[uu], u_gp[uu], s.tau) + _info_nce_direct(i_g[ii], i_gp[ii], s.tau)
    u1, i1 = _lightgcn_dense(model, obj.view_edges[0])
    u2, i2 = _lightgcn_dense(model, obj.view_edges[1])
    hal = _info_nce_direct(u1[uu], u2[uu], s.tau) + _info_nce_direct(i1[ii], i2[ii], s.tau)
    return {"rec": rec, "l2": reg, "de": de, "hal": hal, "false_negatives_flagged": flagged,
            "total": rec + reg + s.lambda_de * de + s.lambda_hal * hal}


def test_contrastive_weights_rise_over_the_warmup():
    torch.manual_seed(0)
    obj = _objective(lambda_de=0.3, lambda_hal=0.7, rho=0.3, pool_size=4, contrast_warmup=4)
    model = LightGCN(N_USERS, N_ITEMS, dim=8, layers=2)
    scales = []
    for epoch in (1, 3, 5, 9):
        obj.start_epoch(epoch, np.random.default_rng(5))
        scales.append(obj.contrast_scale)
        users, pos, pool = _batch(obj)
        out = obj(model, users, pos, pool)
        p = out.parts
        want = p["rec"] + p["l2"] + obj.contrast_scale * (0.3 * p["de"] + 0.7 * p["hal"])
        assert out.total.item() == pytest.approx(want, rel=1e-5)
        assert p["de"] > 0 and p["hal"] > 0  # computed and reported even at weight 0
    assert scales == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ConfigError, match="contrast_warmup"):
        LLMHNISettings(contrast_warmup=-1)


def test_every_term_matches_a_direct_computation():
    torch.manual_seed(0)
    obj = _objective(lambda_de=0.3, lambda_hal=0.7, rho=0.3, pool_size=4)
    obj.start_epoch(1, np.random.default_rng(5))
    model = LightGCN(N_USERS, N_ITEMS, dim=8, layers=2)
    users, pos, pool = _batch(obj)
    out = obj(model, users, pos, pool)
    ref = _reference(obj, model, users, pos, pool)
    for key in ("rec", "l2", "de", "hal", "false_negatives_flagged"):
        assert out.parts[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key
    assert out.total.item() == pytest.approx(ref["total"], rel=1e-4)
    assert ref["hal"] != pytest.approx(ref["de"])  # the views differ from the full graphs


def test_positives_eval_graph_and_views():
    obj = _objective(rho=0.5)
    assert np.array_equal(obj.positives, G_PRIME)
    assert obj.eval_adj() is obj.adj_Gprime
    obj.start_epoch(1, np.random.default_rng(0))
    g, gp = set(map(tuple, G.tolist())), set(map(tuple, G_PRIME.tolist()))
    v1, v2 = (set(map(tuple, e.tolist())) for e in obj.view_edges)
    assert v1 <= g and v2 <= gp and len(v1) < len(g)
    first = [e.copy() for e in obj.view_edges]
    obj.start_epoch(2, np.random.default_rng(1))  # redrawn every epoch
    assert any(not np.array_equal(a, b) for a, b in zip(first, obj.view_edges))


def test_sampler_pools_exclude_g_and_g_prime_and_choice_is_never_flagged():
    obj = _objective(pool_size=3)
    users, pos, pool = _batch(obj)
    both = set(map(tuple, np.concatenate([G, G_PRIME]).tolist()))
    assert pool.shape == (len(G_PRIME), 3)
    assert not any((u, j) in both for u, row in zip(users.tolist(), pool.tolist()) for j in row)
    model = LightGCN(N_USERS, N_ITEMS, dim=8, layers=2)
    u_emb, i_emb = model(obj.adj_Gprime)
    neg, sel = obj.choose_negatives(users, pool, i_emb, u_emb)
    assert not any((u, j) in both for u, j in zip(users.tolist(), neg.tolist()))
    flagged_items = torch.where(sel.flagged, pool, -1)
    assert not (flagged_items == neg.unsqueeze(1)).any()


def _pair(model_cls, base: dict, off: dict, seed=0):
    """The same batch through an objective and its switched-off twin."""
    outs, states = [], []
    for kw in (base, {**base, **off}):
        obj = _objective(**kw)
        rng = np.random.default_rng(seed)
        obj.start_epoch(1, rng)
        states.append(rng.bit_generator.state)
        torch.manual_seed(0)
        model = model_cls(N_USERS, N_ITEMS, dim=8, layers=2)
        model.eval()  # NGCF's dropout off: both runs see the same forward
        users, pos, pool = _batch(obj, seed)
        outs.append(obj(model, users, pos, pool))
    assert states[0] == states[1]  # switching a part off does not shift the trainer's sampling
    return outs


@pytest.mark.parametrize("model_cls", [LightGCN, NGCF])
@pytest.mark.parametrize("off", [{"hal": False}, {"lambda_hal": 0.0}])
def test_switching_hal_off_removes_only_hal(model_cls, off):
    full, part = _pair(model_cls, {"lambda_hal": 0.5}, off)
    assert "hal" in full.parts and "hal" not in part.parts
    assert {k: v for k, v in full.parts.items() if k != "hal"} == pytest.approx(part.parts)
    assert part.total.item() == pytest.approx(full.total.item() - 0.5 * full.parts["hal"], rel=1e-5)


@pytest.mark.parametrize("model_cls", [LightGCN, NGCF])
def test_switching_de_off_removes_only_de(model_cls):
    full, part = _pair(model_cls, {"lambda_de": 0.4}, {"lambda_de": 0.0})
    assert "de" in full.parts and "de" not in part.parts
    assert {k: v for k, v in full.parts.items() if k != "de"} == pytest.approx(part.parts)
    assert part.total.item() == pytest.approx(full.total.item() - 0.4 * full.parts["de"], rel=1e-5)


def test_no_denoise_means_g_prime_is_g_and_no_de():
    obj = _objective(denoise=False)
    assert np.array_equal(obj.positives, G) and obj.eval_adj() is obj.adj_G
    obj.start_epoch(1, np.random.default_rng(0))
    g = set(map(tuple, G.tolist()))
    assert all(set(map(tuple, e.tolist())) <= g for e in obj.view_edges)
    users, pos, pool = _batch(obj)
    out = obj(LightGCN(N_USERS, N_ITEMS, dim=8, layers=2), users, pos, pool)
    assert "de" not in out.parts and "hal" in out.parts


def test_no_semantic_negatives_is_plain_bpr_on_the_first_candidate():
    zu, zi = _z()
    obj = LLMHNIObjective(G, G_PRIME, N_USERS, N_ITEMS, TS,
                          LLMHNISettings(semantic_negatives=False, lambda_de=0.0, hal=False))
    assert obj.make_sampler().pool_size == 1
    obj.start_epoch(1, np.random.default_rng(0))
    _, _, pool = _batch(_objective())  # a wider pool: only column 0 may be used
    users, pos = torch.from_numpy(G_PRIME[:, 0]), torch.from_numpy(G_PRIME[:, 1])
    model = LightGCN(N_USERS, N_ITEMS, dim=8, layers=2)
    out = obj(model, users, pos, pool)
    out_1d = obj(model, users, pos, pool[:, 0])  # a 1-D negative: plain BPR as well
    u, i = model(obj.adj_Gprime)
    s_pos = (u[users] * i[pos]).sum(-1)
    s_neg = (u[users] * i[pool[:, 0]]).sum(-1)
    expected = torch.nn.functional.softplus(-(s_pos - s_neg)).mean().item()
    assert out.parts["rec"] == pytest.approx(expected, rel=1e-5)
    assert out_1d.parts == pytest.approx(out.parts)
    assert "false_negatives_flagged" not in out.parts


def test_one_dimensional_negatives_skip_the_semantic_choice():
    obj = _objective()
    obj.start_epoch(1, np.random.default_rng(0))
    users, pos, pool = _batch(obj)
    out = obj(LightGCN(N_USERS, N_ITEMS, dim=8, layers=2), users, pos, pool[:, 1])
    assert "false_negatives_flagged" not in out.parts and math.isfinite(out.total.item())


def test_missing_vectors_or_views_are_errors():
    with pytest.raises(ConfigError):
        LLMHNIObjective(G, G_PRIME, N_USERS, N_ITEMS, TS, LLMHNISettings())
    obj = _objective()
    users, pos, pool = _batch(obj)
    with pytest.raises(RuntimeError, match="start_epoch"):
        obj(LightGCN(N_USERS, N_ITEMS, dim=8, layers=2), users, pos, pool)


@pytest.mark.parametrize("rule", ["threshold", "combined"])
def test_combined_and_threshold_rules_run_and_count(rule):
    obj = _objective(similarity_rule=rule, beta=2.0, pool_size=6)
    obj.start_epoch(1, np.random.default_rng(0))
    users, pos, pool = _batch(obj)
    model = LightGCN(N_USERS, N_ITEMS, dim=8, layers=2)
    out = obj(model, users, pos, pool)
    out.total.backward()
    # the counts are those of the choice: candidates scoring strictly above the chosen one
    with torch.no_grad():
        u_emb, i_emb = model(obj.adj_Gprime)
        neg, sel = obj.choose_negatives(users, pool, i_emb, u_emb)
        scores = (u_emb[users].unsqueeze(1) * i_emb[pool]).sum(-1)
        chosen = (u_emb[users] * i_emb[neg]).sum(-1)
    assert out.parts["false_negatives_flagged"] == float((scores > chosen[:, None]).sum())
    assert out.parts["fallback_rows"] == float(sel.fallback.sum())


# ----------------------------------------------------------------- end to end
def _random_data(seed=0, n_users=40, n_items=60):
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.stack([rng.integers(0, n_users, 900), rng.integers(0, n_items, 900)], 1), axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    n = len(pairs)
    train, val, test = pairs[: int(0.8 * n)], pairs[int(0.8 * n): int(0.9 * n)], pairs[int(0.9 * n):]
    return Interactions("toy", n_users, n_items, train, val, test)


@pytest.mark.parametrize("model_cls", [LightGCN, NGCF])
def test_fit_runs_and_the_loss_decreases(model_cls):
    data = _random_data()
    rng = np.random.default_rng(1)
    gp = np.concatenate([data.train[10:], [[0, i] for i in range(data.n_items)
                                           if i not in set(data.train[data.train[:, 0] == 0, 1])][:3]])
    zu = rng.normal(size=(data.n_users, 8)).astype(np.float32)
    zi = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    ts = TrainSettings(epochs=20, batch_size=128, lr=0.05, eval_every=10, patience=5, min_epochs=1)
    obj = LLMHNIObjective(data.train, gp, data.n_users, data.n_items, ts,
                          LLMHNISettings(pool_size=5), z_user=zu, z_item=zi)
    torch.manual_seed(0)
    model = model_cls(data.n_users, data.n_items, dim=16, layers=2)
    res = fit(model, data, obj, train=ts, eval=EvalSettings(ks=(5,)), sampler=obj.make_sampler(),
              progress=False)
    losses = [row["loss"] for row in res.history]
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert {"rec", "l2", "de", "hal", "false_negatives_flagged"} <= set(res.history[0])
    assert res.history[-1]["rec"] < res.history[0]["rec"]
    assert set(res.test) == {"recall@5", "ndcg@5"}  # the ks asked for, nothing else


def test_similarity_table_and_per_batch_similarity_agree(monkeypatch):
    from llmhni_local.llmhni import objective as objective_module

    outs = []
    for limit in (10**9, 0):
        monkeypatch.setattr(objective_module, "SIM_TABLE_MAX", limit)
        obj = _objective(pool_size=5, lambda_de=0.0, hal=False)
        assert (obj.sim_table is None) == (limit == 0)
        obj.start_epoch(1, np.random.default_rng(0))
        torch.manual_seed(0)
        outs.append(obj(LightGCN(N_USERS, N_ITEMS, dim=8, layers=2), *_batch(obj)))
    assert outs[0].parts == pytest.approx(outs[1].parts)


def test_settings_build_from_a_table_and_check_values():
    from llmhni_local.core.config import build
    from llmhni_local.llmhni.settings import AlignSettings

    s = build(LLMHNISettings, {"similarity_rule": "combined", "beta": 0.5, "hal": "false",
                               "align": {"epochs": 3}})
    assert s.similarity_rule == "combined" and s.hal is False and not s.hal_on
    assert s.align == AlignSettings(epochs=3) and s.de_on
    assert LLMHNISettings(lambda_de=0.0).de_on is False and LLMHNISettings(denoise=False).de_on is False
    for bad in ({"rho": 1.0}, {"pool_size": 0}, {"threshold_quantile": 1.5},
                {"similarity_rule": "both"}, {"align": {"temperature": 0}}, {"lambda_x": 1}):
        with pytest.raises(ConfigError):
            build(LLMHNISettings, bad)
