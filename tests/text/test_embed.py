"""Profile embeddings: every profile embedded once, saved with a sidecar, reused unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmhni_local.core.errors import DataError, UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.api import Embedder
from llmhni_local.engine.settings import EmbedderSettings
from llmhni_local.text.embed import embed_profiles, load_embeddings
from llmhni_local.text.profiles import make_profiles, save_profiles


class FakeEmbedder(Embedder):
    model_id = "fake-embed@0"

    def __init__(self, dim=8):
        self.dim, self.texts, self.closed = dim, [], False

    def embed(self, texts):
        self.texts.extend(texts)
        out = np.array([[hash((t, k)) % 997 / 997 for k in range(self.dim)] for t in texts],
                       dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def close(self):
        self.closed = True


def tiny(n_users=3) -> Interactions:
    return Interactions(
        name="tiny", n_users=n_users, n_items=4,
        train=np.array([[u, u % 4] for u in range(n_users)] + [[0, 3]]),
        val=np.zeros((0, 2), dtype=np.int64), test=np.zeros((0, 2), dtype=np.int64),
        item_meta=[{"title": f"Item {i}", "genres": "Drama"} for i in range(4)])


@pytest.fixture
def run(tmp_path):
    save_profiles(tmp_path, make_profiles(tiny()))
    return tmp_path


def test_embeds_every_profile_and_reuses(run):
    fake = FakeEmbedder()
    settings = EmbedderSettings(backend="sentence-transformers")
    e = embed_profiles(run, settings, lambda: fake, model_id="fake-embed@0", batch_size=2)
    assert e.users.shape == (3, 8) and e.items.shape == (4, 8) and not e.reused
    assert len(fake.texts) == 7 and fake.closed
    meta = json.loads((run / "embeddings" / "meta.json").read_text())
    assert meta["model_id"] == "fake-embed@0" and meta["settings"]["pooling"] == "mean"
    assert meta["profiles_hash"] == e.meta["profiles_hash"]

    def never():
        raise AssertionError("no engine may start when nothing changed")

    again = embed_profiles(run, settings, never, model_id="fake-embed@0")
    assert again.reused and np.array_equal(again.users, e.users)
    # a changed setting, model or profile embeds again
    for changed in (dict(settings=EmbedderSettings(backend="sentence-transformers",
                                                   normalize=False)),
                    dict(model_id="fake-embed@1")):
        kw = dict(settings=settings, model_id="fake-embed@0") | changed
        f2 = FakeEmbedder()
        assert not embed_profiles(run, kw["settings"], lambda: f2, model_id=kw["model_id"]).reused
        assert len(f2.texts) == 7
    save_profiles(run, make_profiles(tiny(n_users=4)))
    e4 = embed_profiles(run, settings, FakeEmbedder, model_id="fake-embed@0")
    assert not e4.reused and e4.users.shape == (4, 8)
    assert load_embeddings(run).users.shape == (4, 8)


def test_tampered_vectors_are_not_reused(run):
    settings = EmbedderSettings()
    embed_profiles(run, settings, FakeEmbedder)
    np.save(run / "embeddings" / "users.npy", np.zeros((3, 8), dtype=np.float32))
    fresh = FakeEmbedder()
    e = embed_profiles(run, settings, lambda: fresh)
    assert not e.reused and len(fresh.texts) == 7
    with pytest.raises(UserError, match="run the `embed` stage"):
        load_embeddings(run / "other")


def test_bad_vectors_are_errors(run):
    class Broken(FakeEmbedder):
        def embed(self, texts):
            out = super().embed(texts)
            out[0, 0] = np.nan
            return out

    with pytest.raises(DataError, match="non-finite"):
        embed_profiles(run, EmbedderSettings(), Broken)

    class Short(FakeEmbedder):
        def embed(self, texts):
            return super().embed(texts)[:-1]

    with pytest.raises(DataError, match="shape"):
        embed_profiles(run, EmbedderSettings(), Short)
    assert not (run / "embeddings" / "meta.json").exists()


def test_real_minilm_through_sentence_transformers(run):
    pytest.importorskip("sentence_transformers")
    from llmhni_local.text.embed import embedder_model_id
    from llmhni_local.weights.registry import resolve_model

    try:
        resolve_model("minilm")
    except UserError as exc:
        pytest.skip(str(exc))
    settings = EmbedderSettings(backend="sentence-transformers")
    mid = embedder_model_id(settings)
    e = embed_profiles(run, settings, model_id=mid)
    assert e.users.shape == (3, 384) and e.items.shape == (4, 384)
    assert np.allclose(np.linalg.norm(e.items, axis=1), 1.0, atol=1e-4)  # normalize=True
    assert e.meta["model_id"].startswith("minilm@")
    assert embed_profiles(run, settings, model_id=mid).reused
