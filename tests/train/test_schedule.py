"""Warm-ups of the contrastive terms: SGL's ``train.ssl_warmup`` as LLMHNI's contrast_warmup."""

import numpy as np
import pytest
import torch

from llmhni_local.core.config import TrainSettings
from llmhni_local.models import build_model
from llmhni_local.train.losses import warmup_scale
from llmhni_local.train.objectives import RecObjective


def test_warmup_scale():
    assert [warmup_scale(e, 10) for e in (1, 6, 11, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert warmup_scale(1, 0) == 1.0


@pytest.mark.parametrize("epoch,share", [(1, 0.0), (3, 0.5), (5, 1.0)])
def test_sgl_contrast_weight_follows_the_warmup(epoch, share):
    rng = np.random.default_rng(0)
    edges = np.unique(np.stack([rng.integers(0, 8, 60), rng.integers(0, 10, 60)], 1), axis=0)
    s = TrainSettings(loss="sgl", ssl_weight=0.5, ssl_warmup=4)
    obj = RecObjective(edges, 8, 10, s)
    torch.manual_seed(0)
    model = build_model("lightgcn", 8, 10, 8, 2)
    obj.start_epoch(epoch, np.random.default_rng(1))
    users, pos = torch.from_numpy(edges[:16, 0]), torch.from_numpy(edges[:16, 1])
    neg = torch.from_numpy(rng.integers(0, 10, 16))
    out = obj(model, users, pos, neg)
    assert out.parts["ssl"] > 0  # computed (and reported) even while its weight is 0
    expected = out.parts["rec"] + out.parts["l2"] + share * 0.5 * out.parts["ssl"]
    assert float(out.total) == pytest.approx(expected, rel=1e-5)


def test_ssl_warmup_must_not_be_negative():
    from llmhni_local.core.errors import ConfigError

    with pytest.raises(ConfigError, match="train.ssl_warmup"):
        TrainSettings(ssl_warmup=-1)
