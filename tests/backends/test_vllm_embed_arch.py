"""The vLLM embedder refuses, before its engine starts, an architecture this vLLM has no
model for (all-mpnet-base-v2's MPNet), naming the backend that serves it. Reads vLLM's model
registry (an import, ~2 s); starts no engine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from llmhni_local.backends import make_embedding_backend, vllm_compat  # noqa: E402
from llmhni_local.core.errors import ConfigError  # noqa: E402
from llmhni_local.engine.settings import EmbedderSettings  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "llmhni_tests_tiny_st", Path(__file__).parents[1] / "helpers" / "tiny_st.py")
tiny_st = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_st)


def _config(folder: Path, archs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": archs}))
    return folder


@pytest.mark.parametrize("archs, refused", [
    (["MPNetForMaskedLM"], "MPNetForMaskedLM"),  # all-mpnet-base-v2
    (["MPNetModel"], "MPNetModel"),
    (["Gemma3TextModel"], None),  # EmbeddingGemma-300M
    (["BertModel"], None),  # all-MiniLM-L6-v2
    (["LlamaForCausalLM"], None),  # a generative model, converted to an embedder
    ([], None),  # nothing named: the engine decides
])
def test_architectures_this_vllm_cannot_embed(tmp_path, archs, refused) -> None:
    assert vllm_compat.unembeddable_architecture(_config(tmp_path / "m", archs)) == refused


def test_vllm_embedder_refuses_before_the_engine(tmp_path, monkeypatch) -> None:
    folder = tiny_st.build_tiny_bert(tmp_path / "mpnet_like")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config,
                                                    "architectures": ["MPNetForMaskedLM"]}))

    def no_engine(*a, **kw):
        raise AssertionError("the engine must not start")

    monkeypatch.setattr(vllm_compat, "make_embedder", no_engine)
    with pytest.raises(ConfigError, match=r'this vLLM has no model for MPNetForMaskedLM .*; '
                                          r'embedder.backend = "sentence-transformers" '
                                          r"serves it$") as err:
        make_embedding_backend(EmbedderSettings(backend="vllm", model=str(folder)))
    assert "\n" not in str(err.value)
