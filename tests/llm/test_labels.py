"""Label parsing and label probabilities (no model needed, except the tiny tokenizer)."""

from __future__ import annotations

import math

import pytest

from llmhni_local.errors import UserError
from llmhni_local.llm.labels import label_token_ids, parse_label, probs_from_logprobs

ACCEPTED = [
    ("High", "High"), ("Medium", "Medium"), ("Low", "Low"),
    ("high", "High"), ("HIGH", "High"), ("mEdIuM", "Medium"),
    ("High.", "High"), ("Low!", "Low"), ("Medium,", "Medium"), ("High?", "High"),
    ("  High  ", "High"), ("\nLow\n", "Low"), ("\tMedium", "Medium"),
    ("**Medium**", "Medium"), ("*High*", "High"), ("__Low__", "Low"), ("`High`", "High"),
    ("'High'", "High"), ('"Low"', "Low"), ("\u201cMedium\u201d", "Medium"),
    ("# High", "High"), ("> Low", "Low"), ("- Medium", "Medium"), ("(High)", "High"),
    ("[Low]", "Low"), ("High relevance", "High"), ("high relevance.", "High"),
    ("Low - the user dislikes horror", "Low"), ("High\n\nThe user liked similar films.", "High"),
    ("Answer: High", "High"), ("answer: **low**", "Low"), ("Relevance: Medium", "Medium"),
    ("Rating - High", "High"), ("Relevance level: Low", "Low"), ("Label: High", "High"),
    ("High High", "High"), ("High (high)", "High"), ("High-relevance", "High"),
    ("Medium.\n\nMedium", "Medium"),
]

REJECTED = [
    "", "   ", "\n", ".", "**", "I think", "I think High", "Hi", "Highly", "Med", "Lo",
    "Mediumish", "HighMedium", "Not high", "not relevant", "High or Medium", "High/Low",
    "Medium-high", "Low-Medium", "Between Medium and High", "high, maybe medium",
    "1. High", "3", "The answer is High", "Answer:", "Relevance: unknown", "N/A", "None",
    "Very High", "Sehr hoch", "Mittel", "\u00a0", "High? No, Low",
]


@pytest.mark.parametrize("text,label", ACCEPTED)
def test_parse_label_accepts(text: str, label: str) -> None:
    assert parse_label(text) == label


@pytest.mark.parametrize("text", REJECTED)
def test_parse_label_rejects(text: str) -> None:
    assert parse_label(text) is None


def test_parse_label_none() -> None:
    assert parse_label(None) is None


IDS = {"High": 10, "Medium": 20, "Low": 30}


def test_probs_renormalised_over_labels() -> None:
    lps = {10: math.log(0.3), 20: math.log(0.1), 30: math.log(0.1), 99: math.log(0.5)}
    probs, mass = probs_from_logprobs(lps, IDS)
    assert probs == pytest.approx({"High": 0.6, "Medium": 0.2, "Low": 0.2})
    assert mass == pytest.approx(0.5)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_probs_tiny_logprobs_do_not_underflow() -> None:
    probs, mass = probs_from_logprobs({10: -900.0, 20: -901.0, 30: -1000.0}, IDS)
    assert probs["High"] == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-9)
    assert probs["Low"] == pytest.approx(0.0, abs=1e-30)
    assert mass == 0.0  # exp(-900) underflows; the renormalised probabilities do not


def test_probs_missing_label_is_not_guessed() -> None:
    assert probs_from_logprobs({10: -1.0, 20: -2.0}, IDS) == (None, None)
    assert probs_from_logprobs({10: -1.0, 20: -2.0, 30: float("nan")}, IDS) == (None, None)


def test_probs_all_impossible() -> None:
    inf = -math.inf
    assert probs_from_logprobs({10: inf, 20: inf, 30: inf}, IDS) == (None, 0.0)


def test_label_token_ids_tiny(tiny_llama) -> None:
    from llmhni_local.llm.chat import load_tokenizer

    tok = load_tokenizer(tiny_llama)
    ids = label_token_ids(tok)
    assert set(ids) == {"High", "Medium", "Low"}
    assert len(set(ids.values())) == 3
    for label, tid in ids.items():
        # The first token as written right after the template's "assistant\n": no leading space.
        piece = tok.decode([tid])
        assert label.startswith(piece) and piece, (label, piece)


class _FakeTokenizer:
    """Char-pair tokenizer without chat template: 'Hi'/'Me'/'Lo' ... as first tokens."""

    chat_template = None
    name_or_path = "fake"

    def __init__(self, width: int) -> None:
        self.width = width
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        pieces = [text[i:i + self.width] for i in range(0, len(text), self.width)]
        return {"input_ids": [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]}

    def convert_ids_to_tokens(self, tid: int) -> str:
        return {v: k for k, v in self.vocab.items()}[tid]


def test_label_token_ids_distinct_without_template() -> None:
    ids = label_token_ids(_FakeTokenizer(width=2))
    assert len(set(ids.values())) == 3


def test_label_token_ids_shared_first_token_raises() -> None:
    with pytest.raises(UserError, match="constrained choice"):
        label_token_ids(_FakeTokenizer(width=2), labels=("Good", "Gone", "Bad"))


def test_label_token_ids_smollm2_if_prepared() -> None:
    """ENV.md: SmolLM2 answers without a space, so 'Medium' is scored by its 'Med' token."""
    from llmhni_local.llm.chat import load_tokenizer
    from llmhni_local.llm.registry import resolve_model

    try:
        spec = resolve_model("smollm2")
    except UserError:
        pytest.skip("smollm2 not prepared (python cli.py models prepare smollm2)")
    tok = load_tokenizer(spec.path)
    ids = label_token_ids(tok)
    assert tok.convert_ids_to_tokens([ids["High"], ids["Medium"], ids["Low"]]) == \
        ["High", "Med", "Low"]
