import numpy as np

from llmhni_local.train.samplers import UniformNegatives


def test_never_returns_a_positive_and_is_seeded():
    rng = np.random.default_rng(0)
    pos = np.array([[u, i] for u in range(5) for i in range(8) if (u + i) % 3])
    s = UniformNegatives(pos, n_items=10)
    users = np.repeat(np.arange(5), 200)
    neg = s.sample(users, np.random.default_rng(1))
    assert not s.is_positive(users, neg).any()
    assert (neg >= 0).all() and (neg < 10).all()
    assert np.array_equal(neg, s.sample(users, np.random.default_rng(1)))
    many = s.sample(users[:7], rng, n=4)
    assert many.shape == (7, 4) and not s.is_positive(np.repeat(users[:7], 4), many.ravel()).any()
