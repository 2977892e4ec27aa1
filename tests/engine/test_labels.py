"""Label parsing and label probabilities (no model needed, except the tiny tokenizer)."""

from __future__ import annotations

import math

import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.engine.labels import (
    choose_label,
    label_token_ids,
    parse_label,
    probs_from_logprobs,
    template_label_ids,
)

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
    from llmhni_local.engine.chat import load_tokenizer

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

    def convert_ids_to_tokens(self, tid):
        back = {v: k for k, v in self.vocab.items()}
        return [back[t] for t in tid] if isinstance(tid, list) else back[tid]


def test_label_token_ids_distinct_without_template() -> None:
    ids = label_token_ids(_FakeTokenizer(width=2))
    assert len(set(ids.values())) == 3


def test_label_token_ids_shared_first_token_raises() -> None:
    with pytest.raises(UserError, match="constrained choice"):
        label_token_ids(_FakeTokenizer(width=2), labels=("Good", "Gone", "Bad"))


def test_label_token_ids_smollm2_if_prepared() -> None:
    """Measured on SmolLM2 (docs/DESIGN.md, "Reading the answer at the label"): SmolLM2 answers without a space, so 'Medium' is scored by its 'Med' token."""
    from llmhni_local.engine.chat import load_tokenizer
    from llmhni_local.weights.registry import resolve_model

    try:
        spec = resolve_model("smollm2")
    except UserError:
        pytest.skip("smollm2 not prepared (python cli.py models prepare smollm2)")
    tok = load_tokenizer(spec.path)
    ids = label_token_ids(tok)
    assert tok.convert_ids_to_tokens([ids["High"], ids["Medium"], ids["Low"]]) == \
        ["High", "Med", "Low"]


# ---------------------------------------------------------------------------- after the cue
def test_cue_label_ids_tiny_are_the_space_words(tiny_llama) -> None:
    from llmhni_local.engine.chat import load_tokenizer, render_prompt

    tok = load_tokenizer(tiny_llama)
    ids = label_token_ids(tok, cue="Relevance:", where="rate_user_centric.toml")
    # After "Relevance:" the model writes " High": one token, read at the answer position.
    assert {lab: tok.decode([t]) for lab, t in ids.items()} == \
        {"High": " High", "Medium": " Medium", "Low": " Low"}
    assert ids != label_token_ids(tok)  # not the tokens that start a bare answer
    text = render_prompt(tok, [{"role": "user", "content": "Rate."},
                               {"role": "assistant", "content": "Relevance:"}])
    assert text.endswith("<|im_start|>assistant\nRelevance:")


def test_cue_label_not_one_token_names_file_and_pieces() -> None:
    # Two characters a token: " High" after "Ans:" is " H", "ig", "h".
    with pytest.raises(UserError) as exc:
        label_token_ids(_FakeTokenizer(width=2), cue="Ans:", where="prompts/rate_x.toml")
    msg = str(exc.value)
    assert msg.startswith("prompts/rate_x.toml:") and "not a single token" in msg
    assert "[' H', 'ig', 'h']" in msg


def test_cue_that_merges_with_the_label_is_refused() -> None:
    # "Ans" + " High": the cue's last piece "s" becomes "s " - the label has no position.
    with pytest.raises(UserError, match="merge into tokens"):
        label_token_ids(_FakeTokenizer(width=2), cue="Ans", where="t.toml")


def test_cue_labels_sharing_a_token_are_refused() -> None:
    class Folding(_FakeTokenizer):  # case-blind pieces: " High" and " HIGH" are one token
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
            return super().__call__(text.lower(), add_special_tokens)

    with pytest.raises(UserError, match="same sequence"):
        label_token_ids(Folding(width=6), labels=("High", "HIGH", "Low"), cue="Answer",
                        where="t.toml")


def test_a_split_label_is_a_sequence_for_the_rater() -> None:
    from llmhni_local.engine.labels import label_sequences

    tok = _FakeTokenizer(width=2)
    seqs = label_sequences(tok, cue="Ans:", where="prompts/rate_x.toml")
    assert [tok.convert_ids_to_tokens(list(seqs["High"]))] == [[" H", "ig", "h"]]
    assert len(set(seqs.values())) == 3


@pytest.mark.parametrize("name", ["smollm2", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_real_tokenizers_read_the_labels_after_the_cue(name) -> None:
    """SmolLM2's tokenizer and Qwen2's (read out of the installed GGUF's metadata by
    ``models install``); skipped where the model is not installed."""
    from llmhni_local.engine.chat import load_tokenizer
    from llmhni_local.engine.labels import label_sequences
    from llmhni_local.weights.registry import resolve_model

    try:
        spec = resolve_model(name)
    except UserError:
        pytest.skip(f"{name} not installed")
    tok = load_tokenizer(spec.path)
    seqs = label_sequences(tok, cue="Relevance:")
    assert [tok.convert_ids_to_tokens(list(seqs[lab])) for lab in ("High", "Medium", "Low")] == \
        [["\u0120High"], ["\u0120Medium"], ["\u0120Low"]]


def test_template_label_ids_smollm2_if_prepared() -> None:
    from llmhni_local.engine.chat import load_tokenizer
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.weights.registry import resolve_model

    try:
        spec = resolve_model("smollm2")
    except UserError:
        pytest.skip("smollm2 not prepared (python cli.py models prepare smollm2)")
    tok = load_tokenizer(spec.path)
    per_cue = template_label_ids(tok, load_templates(tuple(VIEW_TEMPLATES.values())).values())
    assert list(per_cue) == ["Relevance:"]  # both views share the cue
    ids = per_cue["Relevance:"]
    assert tok.convert_ids_to_tokens([ids["High"], ids["Medium"], ids["Low"]]) == \
        ["\u0120High", "\u0120Medium", "\u0120Low"]


def test_template_label_ids_names_the_template(tiny_llama, tmp_path) -> None:
    from llmhni_local.engine.chat import load_tokenizer
    from llmhni_local.engine.prompts import load_template

    (tmp_path / "rate_user_centric.toml").write_text(
        'version = 3\nsystem = "s"\nuser = "{user_profile} {item_profile}"\n'
        'assistant = "Relevance:"\n')
    tpl = load_template("rate_user_centric", tmp_path)
    tok = load_tokenizer(tiny_llama)
    with pytest.raises(UserError) as exc:  # " Mediocre" is not one token of the tiny BPE
        template_label_ids(tok, [tpl], labels=("High", "Mediocre", "Low"))
    assert str(exc.value).startswith(str(tmp_path / "rate_user_centric.toml"))
    assert "'Mediocre'" in str(exc.value) and "not a single token" in str(exc.value)


def test_choose_label_is_the_argmax() -> None:
    assert choose_label({"High": 0.2, "Medium": 0.5, "Low": 0.3}) == "Medium"
    assert choose_label({"High": 0.4, "Medium": 0.2, "Low": 0.4}) == "High"  # tie: first label
    assert choose_label(None) is None
