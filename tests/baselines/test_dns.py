"""DNS takes the highest-scoring candidate of a uniform pool."""

import numpy as np
import pytest
import torch

from llmhni_local.baselines.dns import DNSObjective, DNSSettings, hardest
from llmhni_local.core.config import EvalSettings, TrainSettings
from llmhni_local.models import NGCF, LightGCN
from llmhni_local.train.objectives import RecObjective
from llmhni_local.train.trainer import fit



def test_hardest_is_the_row_maximum():
    g = torch.Generator().manual_seed(0)
    ue, ie = torch.randn(4, 3, generator=g), torch.randn(9, 3, generator=g)
    users = torch.tensor([0, 1, 2, 3])
    pool = torch.randint(0, 9, (4, 5), generator=g)
    chosen = hardest(users, pool, ue, ie)
    scores = (ue[users].unsqueeze(1) * ie[pool]).sum(-1)
    assert torch.equal((ue[users] * ie[chosen]).sum(-1), scores.max(1).values)


def test_the_objective_trains_on_harder_negatives_than_the_pool(synth_data):
    d = synth_data(n_users=30, n_items=40, per_user=10)
    obj = DNSObjective(d.train, d.n_users, d.n_items, TrainSettings(), DNSSettings(pool=8))
    model = LightGCN(d.n_users, d.n_items, 8, 2)
    rng = np.random.default_rng(0)
    users = d.train[:, 0]
    pool = torch.from_numpy(obj.make_sampler().sample(users, rng))
    assert pool.shape == (len(users), 8)
    u_emb, i_emb = model(obj.adj)
    tu = torch.from_numpy(users)
    chosen = obj.choose_negatives(tu, pool, u_emb, i_emb)
    s_chosen = (u_emb[tu] * i_emb[chosen]).sum(-1)
    s_first = (u_emb[tu] * i_emb[pool[:, 0]]).sum(-1)
    assert (s_chosen >= s_first).all() and (s_chosen > s_first).float().mean() > 0.5


def test_a_pool_of_one_is_bpr(synth_data):
    d = synth_data(n_users=30, n_items=40, per_user=10)
    ts = TrainSettings()
    torch.manual_seed(0)
    model = LightGCN(d.n_users, d.n_items, 8, 2)
    users, pos = torch.from_numpy(d.train[:, 0]), torch.from_numpy(d.train[:, 1])
    neg = torch.from_numpy(np.random.default_rng(0).integers(0, d.n_items, (len(users), 1)))
    dns = DNSObjective(d.train, d.n_users, d.n_items, ts, DNSSettings(pool=1))(model, users, pos, neg)
    bpr = RecObjective(d.train, d.n_users, d.n_items, ts)(model, users, pos, neg[:, 0])
    assert torch.allclose(dns.total, bpr.total)


@pytest.mark.parametrize("cls", [LightGCN, NGCF])
def test_trains_on_both_backbones(synth_data, cls):
    d = synth_data(n_users=30, n_items=40, per_user=10)
    obj = DNSObjective(d.train, d.n_users, d.n_items, TrainSettings(), DNSSettings(pool=4))
    r = fit(cls(d.n_users, d.n_items, 8, 2), d, obj,
            train=TrainSettings(epochs=4, eval_every=2, min_epochs=1, batch_size=64),
            eval=EvalSettings(), sampler=obj.make_sampler(), progress=False)
    losses = [h["loss"] for h in r.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
