"""Chat rendering across templates: with a system role, and without one (the system text is
folded into the first user turn), on local and installed tokenizers."""

from __future__ import annotations

import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.engine.chat import fold_system, load_tokenizer, render_prompt, system_form

MSGS = [{"role": "system", "content": "You rate films."},
        {"role": "user", "content": "Toy Story?"},
        {"role": "assistant", "content": "Relevance:"}]

# A template that refuses a system message, as Gemma's does.
NO_SYSTEM = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] }}"
    "{% if not loop.last or message['role'] != 'assistant' %}{{ '<end_of_turn>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>assistant\n' }}{% endif %}"
)


@pytest.fixture()
def tok(tiny_llama):
    return load_tokenizer(tiny_llama)


def test_a_template_with_a_system_role_keeps_it(tok):
    assert system_form(tok) == "system"
    text = render_prompt(tok, MSGS)
    assert "<|im_start|>system\nYou rate films." in text
    assert text.endswith("<|im_start|>assistant\nRelevance:")


def test_a_template_without_a_system_role_gets_the_text_in_the_first_user_turn(tok):
    tok.chat_template = NO_SYSTEM
    tok._llmhni_system_form = None
    with pytest.raises(Exception):
        tok.apply_chat_template(MSGS[:2], tokenize=False)  # the template itself refuses
    assert system_form(tok) == "folded"
    text = render_prompt(tok, MSGS)
    assert "system" not in text
    assert "<start_of_turn>user\nYou rate films.\n\nToy Story?" in text
    assert text.endswith("<start_of_turn>assistant\nRelevance:")


def test_fold_system_without_a_user_turn():
    assert fold_system([{"role": "system", "content": "s"}]) == [{"role": "user", "content": "s"}]
    assert fold_system(MSGS[1:]) == MSGS[1:]


def test_no_chat_template_is_a_one_line_error(tok):
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        render_prompt(tok, MSGS)


@pytest.mark.parametrize("name, start", [("smollm2", "<|im_start|>system\nYou rate films."),
                                         ("qwen2.5-coder-0.5b", "<|im_start|>system\nYou rate films."),
                                         ("qwen2.5-coder-1.5b", "<|im_start|>system\nYou rate films.")])
def test_installed_templates_take_the_system_turn(name, start):
    from llmhni_local.weights.registry import resolve_model

    try:
        spec = resolve_model(name)
    except UserError:
        pytest.skip(f"{name} not installed")
    t = load_tokenizer(spec.path)
    assert system_form(t) == "system"
    text = render_prompt(t, MSGS)
    assert text.startswith(start) and text.endswith("<|im_start|>assistant\nRelevance:")
