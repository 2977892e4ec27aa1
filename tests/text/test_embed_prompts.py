"""The embed stage puts the model's named prompts before user and item profiles, and the new
embedder fields leave existing keys unchanged while at their defaults."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from llmhni_local.core.config import to_dict
from llmhni_local.core.errors import ConfigError
from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.api import Embedder
from llmhni_local.engine.settings import EMBEDDER_ADDED, EmbedderSettings
from llmhni_local.stages.key import stage_key
from llmhni_local.text.embed import embed_key, embed_profiles, model_prompts, profile_prompts
from llmhni_local.text.profiles import make_profiles, save_profiles

PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: ",
           "STS": "task: sentence similarity | query: "}


class PromptedEmbedder(Embedder):
    """Records each call's texts and prompt; the vectors depend on both."""

    model_id = "fake-embed@0"

    def __init__(self):
        self.calls = []

    def embed(self, texts, prompt=None):
        self.calls.append((list(texts), prompt))
        out = np.array([[(hash((prompt, t, k)) % 997 + 1) / 997 for k in range(6)]
                        for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class PlainEmbedder(Embedder):
    """An embedder written before prompts: ``embed(texts)`` only."""

    model_id = "fake-embed@0"

    def embed(self, texts):
        return np.ones((len(texts), 4), dtype=np.float32)


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "gemma_like"
    folder.mkdir()
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": PROMPTS, "default_prompt_name": None}))
    return folder


@pytest.fixture
def run(tmp_path):
    data = Interactions(
        name="tiny", n_users=3, n_items=4,
        train=np.array([[0, 0], [1, 1], [2, 2], [0, 3]]),
        val=np.zeros((0, 2), dtype=np.int64), test=np.zeros((0, 2), dtype=np.int64),
        item_meta=[{"title": f"Item {i}", "genres": "Drama"} for i in range(4)])
    save_profiles(tmp_path / "run", make_profiles(data))
    return tmp_path / "run"


def _never():
    raise AssertionError("no engine may start")


def test_keys_leave_the_added_fields_out_at_their_defaults() -> None:
    default = EmbedderSettings()
    before = {k: v for k, v in dataclasses.asdict(default).items() if k not in EMBEDDER_ADDED}
    assert set(EMBEDDER_ADDED) == {"modules", "user_prompt", "item_prompt"}
    assert embed_key(default, "p", "m@1") == embed_key(before, "p", "m@1")
    old_stage = stage_key("embed", {"embedder": before}, {"profiles": "k"}, "m@1")
    assert stage_key("embed", {"embedder": to_dict(default)}, {"profiles": "k"}, "m@1") == \
        old_stage
    for changed in (dict(user_prompt="query"), dict(item_prompt="document"),
                    dict(modules="settings")):
        other = EmbedderSettings(**changed)
        assert embed_key(other, "p", "m@1") != embed_key(default, "p", "m@1"), changed
        assert stage_key("embed", {"embedder": to_dict(other)}, {"profiles": "k"},
                         "m@1") != old_stage, changed


def test_prompt_names_resolve_to_the_models_text(model) -> None:
    assert model_prompts(model) == PROMPTS
    assert model_prompts(model.parent) == {}  # no config_sentence_transformers.json
    s = EmbedderSettings(model=str(model), user_prompt="query", item_prompt="document")
    assert profile_prompts(s) == {"users": PROMPTS["query"], "items": PROMPTS["document"]}
    assert profile_prompts(EmbedderSettings(model="no-such-model")) == \
        {"users": None, "items": None}  # no name given: the folder is not even read


def test_users_and_items_are_embedded_after_their_prompts(run, model) -> None:
    s = EmbedderSettings(model=str(model), user_prompt="query", item_prompt="document")
    fake = PromptedEmbedder()
    e = embed_profiles(run, s, lambda: fake, model_id="fake-embed@0", batch_size=2)
    # 3 users in calls of 2, then 4 items
    assert [p for _, p in fake.calls] == [PROMPTS["query"]] * 2 + [PROMPTS["document"]] * 2
    assert e.meta["settings"]["user_prompt"] == "query"
    assert embed_profiles(run, s, _never, model_id="fake-embed@0").reused
    # another prompt is other vectors: embedded again
    other = dataclasses.replace(s, user_prompt="STS")
    again = PromptedEmbedder()
    e2 = embed_profiles(run, other, lambda: again, model_id="fake-embed@0")
    assert not e2.reused and again.calls[0][1] == PROMPTS["STS"]
    assert not np.allclose(e2.users, e.users) and np.allclose(e2.items, e.items)
    # without prompts an embedder written before them is called as before
    plain = embed_profiles(run, EmbedderSettings(model=str(model)), PlainEmbedder,
                           model_id="fake-embed@0")
    assert plain.users.shape == (3, 4)


@pytest.mark.parametrize("field", ["user_prompt", "item_prompt"])
def test_unknown_prompt_is_one_line_before_any_engine(run, model, field) -> None:
    with pytest.raises(ConfigError) as err:
        embed_profiles(run, EmbedderSettings(model=str(model), **{field: "qeury"}), _never,
                       model_id="fake-embed@0")
    msg = str(err.value)
    assert "\n" not in msg and f"embedder.{field} = 'qeury'" in msg
    assert all(repr(name) in msg for name in PROMPTS)
    bare = model.parent / "bare"
    bare.mkdir()
    with pytest.raises(ConfigError, match="it has none") as err:
        embed_profiles(run, EmbedderSettings(model=str(bare), **{field: "query"}), _never,
                       model_id="fake-embed@0")
    assert "\n" not in str(err.value)


def test_ray_actor_embeds_each_part_after_its_prompt(monkeypatch) -> None:
    pa = pytest.importorskip("pyarrow")
    from llmhni_local.text import ray_embed

    monkeypatch.setattr(ray_embed, "_where", lambda: "ray worker test")
    fake = PromptedEmbedder()
    actor = ray_embed.RayEmbedder(lambda: fake, prompts={"users": "q: ", "items": None})
    for part in ("users", "items"):
        out = actor(pa.table({"part": [part] * 2, "idx": [0, 1], "text": ["a", "b"]}))
        assert out.num_rows == 2
    assert [p for _, p in fake.calls] == [None, "q: ", None]  # warm-up, users, items
