"""The rater and embedder contract (``engine/api.py``): abstract methods, defaults, the
one-line error of an unserved request type, closing."""

from __future__ import annotations

import numpy as np
import pytest

from llmhni_local.core import closing
from llmhni_local.core.errors import UserError
from llmhni_local.engine.api import (
    Embedder,
    JudgeRequest,
    Judgment,
    LoglikelihoodRequest,
    Rater,
    unserved,
)


class Echo(Rater):
    """Judges every prompt High; serves no log-likelihoods."""

    model_id = "echo@0"
    loglikelihood = unserved("loglikelihood", "try another backend")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[JudgeRequest] = []
        self.closed = 0

    def judge(self, requests):
        self.seen += list(requests)
        return [Judgment("High", "High", None) for _ in requests]

    def close(self) -> None:
        self.closed += 1
        super().close()


def test_a_rater_must_implement_every_request_type():
    class JudgeOnly(Rater):
        def judge(self, requests):
            return []

    with pytest.raises(TypeError, match="loglikelihood"):
        JudgeOnly()
    with pytest.raises(TypeError, match="embed"):
        Embedder()


def test_defaults_say_not_known():
    r = Echo()
    assert r.dtype_choice is None and r.chat_form is None and r.cached_known is False
    assert r.token_stats() == {"prompts": 0, "prompt_tokens": 0, "cached_tokens": 0}
    assert Rater.model_id == "" and r.name == "Echo"


def test_unserved_request_types_are_one_line_errors_known_before_building():
    assert Echo.serves("judge") and not Echo.serves("loglikelihood")
    assert not Echo.serves("generate")  # free generation is opt-in
    with pytest.raises(UserError) as err:
        Echo().loglikelihood([LoglikelihoodRequest("a context", " a name")])
    assert str(err.value) == ("the Echo backend does not serve loglikelihood requests; "
                              "try another backend")
    with pytest.raises(UserError, match="does not serve generate requests"):
        Echo().generate([[{"role": "user", "content": "hi"}]], 4)
    with pytest.raises(ValueError, match="unknown request type"):
        Echo.serves("chat")


def test_rate_is_judge_on_bare_prompts():
    r = Echo()
    messages = [{"role": "user", "content": "hi"}]
    assert r.rate([messages])[0].label == "High"
    assert r.seen == [JudgeRequest(messages=messages)] and r.seen[0].view is None


@pytest.fixture
def registry(monkeypatch):
    """A registry of this test's backends only (others' may be open in this process)."""
    import weakref

    monkeypatch.setattr(closing, "_OPEN", weakref.WeakValueDictionary())


def test_backends_are_tracked_until_closed(registry):
    with Echo() as r:
        assert r in closing.open_objects()
    assert r.closed == 1 and r not in closing.open_objects()
    left = Echo()
    assert closing.close_open(timeout_s=5) == [] and left.closed == 1
    assert left not in closing.open_objects()


def test_a_close_that_hangs_or_fails_does_not_hold_the_others(registry):
    import threading

    release = threading.Event()

    class Stuck(Echo):
        def close(self) -> None:
            release.wait(30)

    class Failing(Echo):
        def close(self) -> None:
            raise RuntimeError("engine already gone")

    failing, stuck = Failing(), Stuck()
    try:
        problems = closing.close_open(timeout_s=0.5)
        assert any("Failing.close: RuntimeError: engine already gone" in p for p in problems)
        assert any("took more than 0.5 s" in p for p in problems)
    finally:
        release.set()
        closing.untrack(failing)
        closing.untrack(stuck)


def test_embedder_contract():
    class Ones(Embedder):
        model_id = "ones@0"

        def embed(self, texts):
            return np.ones((len(texts), 3), dtype=np.float32)

    with Ones() as e:
        assert e.embed(["a", "b"]).shape == (2, 3) and e.dtype_choice is None
