"""Prompt templates: the shipped ones load, malformed ones fail with the file named."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.engine.prompts import (
    LABELS_TEXT,
    PROMPTS_DIR,
    SPECS,
    VIEW_TEMPLATES,
    load_template,
    placeholders,
)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shipped_templates_load(name):
    tpl = load_template(name)
    # the rating templates are at version 3 (v1 got no label from SmolLM2; v3 moved the cue
    # into the assistant turn), the others at 1
    assert tpl.version == ("3" if name in VIEW_TEMPLATES.values() else "1")
    assert len(tpl.hash) == 64
    assert tpl.path == PROMPTS_DIR / f"{name}.toml"


@pytest.mark.parametrize("view,shared", [("user", "{user_profile}"), ("item", "{liked_items}")])
def test_rating_prompts_put_the_shared_part_first_and_ask_for_one_label(view, shared):
    tpl = load_template(VIEW_TEMPLATES[view])
    user = tpl.parts["user"]
    # Prefix caching: the user's part before the item, the question after both.
    assert user.index(shared) < user.index("{item_profile}") < user.index("{labels}")
    msgs = tpl.messages({"user_profile": "P", "liked_items": "L", "item_profile": "I"})
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    # The cue opens the assistant turn (the label is the next token), not the user's text.
    assert msgs[1]["content"].rstrip().endswith("one word: High, Medium or Low.")
    assert "Relevance:" not in msgs[1]["content"]
    assert msgs[2] == {"role": "assistant", "content": "Relevance:"} and tpl.cue == "Relevance:"
    assert msgs[0]["content"].endswith("Reply with a single word: High, Medium or Low.")
    assert LABELS_TEXT == "High, Medium or Low"


def test_answer_cue_changes_the_hash_and_is_checked(tmp_path):
    _write(tmp_path, "rate_user_centric", GOOD_USER)
    plain = load_template("rate_user_centric", tmp_path)
    assert plain.cue is None
    assert [m["role"] for m in plain.messages({"user_profile": "P", "item_profile": "I"})] == \
        ["system", "user"]
    _write(tmp_path, "rate_user_centric", GOOD_USER + 'assistant = "Relevance:"\n')
    cued = load_template("rate_user_centric", tmp_path)
    assert cued.cue == "Relevance:" and cued.hash != plain.hash
    for bad, says in [('"Relevance: "', "ends with whitespace"), ('"{labels}:"', "plain text"),
                      ('""', "non-empty"), ("3", "non-empty")]:
        _write(tmp_path, "rate_user_centric", GOOD_USER + f"assistant = {bad}\n")
        with pytest.raises(UserError, match=says) as exc:
            load_template("rate_user_centric", tmp_path)
        assert "rate_user_centric.toml" in str(exc.value)
    # Only the rating templates take a cue.
    _write(tmp_path, "summarize_user", 'version = 1\nsystem = "s"\nuser = "{user_profile}"\n'
                                       'assistant = "Summary:"\n')
    with pytest.raises(UserError, match="unknown key 'assistant'"):
        load_template("summarize_user", tmp_path)


def test_system_part_is_the_same_across_views():
    # One shared system text: both views of one user start with the same tokens.
    assert load_template("rate_user_centric").parts["system"] == \
        load_template("rate_item_centric").parts["system"]


def _write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD_USER = '''\
version = 2
system = "sys"
user = "{user_profile} then {item_profile}: {labels}"
'''


def test_hash_follows_text_and_version_not_comments(tmp_path):
    _write(tmp_path, "rate_user_centric", GOOD_USER)
    a = load_template("rate_user_centric", tmp_path)
    _write(tmp_path, "rate_user_centric", "# a comment\n" + GOOD_USER)
    assert load_template("rate_user_centric", tmp_path).hash == a.hash
    _write(tmp_path, "rate_user_centric", GOOD_USER.replace("then", "and then"))
    assert load_template("rate_user_centric", tmp_path).hash != a.hash
    _write(tmp_path, "rate_user_centric", GOOD_USER.replace("version = 2", "version = 3"))
    assert load_template("rate_user_centric", tmp_path).hash != a.hash


@pytest.mark.parametrize("body,message", [
    (GOOD_USER.replace("{item_profile}", "{item_profile"), "unbalanced braces"),
    (GOOD_USER.replace("then", "then }"), "unbalanced braces"),
    (GOOD_USER.replace("then", "then {nickname}"), "unknown placeholder {nickname}"),
    (GOOD_USER.replace("{item_profile}", "the item"), "lacks the placeholder {item_profile}"),
    (GOOD_USER.replace("then", "then {}"), "positional placeholder"),
    (GOOD_USER.replace("{labels}", "{labels!r}"), "not a plain {name}"),
    (GOOD_USER.replace("{labels}", "{labels:>9}"), "not a plain {name}"),
    (GOOD_USER.replace("{labels}", "{item_profile.title}"), "not a plain {name}"),
    (GOOD_USER.replace('system = "sys"', 'system = "{liked_items}"'), "unknown placeholder"),
    (GOOD_USER.replace("version = 2\n", ""), "needs a version"),
    (GOOD_USER.replace('system = "sys"\n', ""), "needs a text part 'system'"),
    (GOOD_USER + 'extra = "x"\n', "unknown key 'extra'"),
    (GOOD_USER.replace('user = "', 'user = """'), "not a valid TOML"),
])
def test_malformed_templates_fail_naming_the_file(tmp_path, body, message):
    path = _write(tmp_path, "rate_user_centric", body)
    with pytest.raises(UserError) as err:
        load_template("rate_user_centric", tmp_path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_literal_braces_are_allowed(tmp_path):
    _write(tmp_path, "rate_user_centric", GOOD_USER.replace("then", "then {{json}}"))
    tpl = load_template("rate_user_centric", tmp_path)
    assert "{json}" in tpl.messages({"user_profile": "u", "item_profile": "i"})[1]["content"]


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(UserError, match="prompt template not found"):
        load_template("rate_item_centric", tmp_path)
    with pytest.raises(UserError, match="unknown prompt template"):
        load_template("nope")


def test_profile_template_needs_a_field_and_drops_empty_lines(tmp_path):
    _write(tmp_path, "user_profile", 'version = 1\ntemplate = "Rated: {n_train}"\n')
    with pytest.raises(UserError, match="uses none of"):
        load_template("user_profile", tmp_path)
    tpl = load_template("user_profile")
    text = tpl.render("template", {"demographics": "", "top_genres": "Drama",
                                   "liked_titles": "", "n_train": "3"})
    assert text.splitlines() == ["Favourite genres: Drama", "Rated items: 3"]


def test_values_with_braces_are_not_reinterpreted():
    tpl = load_template("rate_item_centric")
    msgs = tpl.messages({"liked_items": "- {weird} title }", "item_profile": "x"})
    assert "- {weird} title }" in msgs[1]["content"]


def test_placeholders_helper():
    assert placeholders("a {x} b {{y}} {z}", "here") == ["x", "z"]
    with pytest.raises(UserError, match="here: unbalanced"):
        placeholders("{", "here")


def test_copy_of_prompts_dir_loads(tmp_path):
    shutil.copytree(PROMPTS_DIR, tmp_path / "p")
    for name in SPECS:
        assert load_template(name, tmp_path / "p").hash == load_template(name).hash
