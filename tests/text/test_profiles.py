"""Profiles: from training data only, ready-made texts used as they are, saved with a hash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmhni_local.core.errors import DataError, UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.text.profiles import (
    ProfileSettings,
    item_fields,
    item_names,
    liked_items,
    load_profiles,
    make_profiles,
    save_profiles,
    shuffle_profiles,
    summarize_users,
)


def tiny(**changes) -> Interactions:
    """3 users, 5 items; user 0 rated 0:5, 1:2, 2:4, 3:5 in training; item 4 only in test."""
    data = Interactions(
        name="tiny", n_users=3, n_items=5,
        train=np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 1], [1, 2], [2, 3]]),
        val=np.array([[1, 0]]),
        test=np.array([[0, 4], [2, 4]]),
        train_rating=np.array([5, 2, 4, 5, 1, 2, 4], dtype=np.float32),
        user_ids=["u0", "u1", "u2"], item_ids=[f"i{k}" for k in range(5)],
        user_meta=[{"age": "24", "gender": "male"}, {"age": "50", "gender": ""}, {}],
        item_meta=[{"title": "Alpha (1990)", "year": "1990", "genres": "Drama"},
                   {"title": "Beta", "year": "1991", "genres": "Comedy, Drama"},
                   {"title": "Gamma", "year": "", "genres": ""},
                   {"title": "Delta", "year": "1993", "genres": "Drama", "director": "Someone"},
                   {"title": "Test-only item", "year": "2000", "genres": "Horror"}],
    )
    return data.replace(**changes) if changes else data


def test_liked_items_highest_rating_first_training_only():
    liked = liked_items(tiny(), 4.0)
    # user 0: rated 5 (items 0, 3, in training order) then 4 (item 2); item 1 rated 2 is out
    assert liked[0].tolist() == [0, 3, 2]
    assert liked[1].tolist() == []  # all ratings below 4: no liked items, no padding
    assert liked[2].tolist() == [3]
    # without ratings every training item counts, in training order
    assert liked_items(tiny(train_rating=None))[0].tolist() == [0, 1, 2, 3]


def test_profiles_never_read_validation_or_test():
    p = make_profiles(tiny())
    assert "Test-only" not in " ".join(p.users)
    assert all(4 not in a.tolist() for a in p.liked)
    # changing val/test changes nothing
    q = make_profiles(tiny(test=np.array([[0, 1]]), val=np.array([[2, 2]])))
    assert q.hash == p.hash
    # changing a training rating does
    r = make_profiles(tiny(train_rating=np.array([5, 5, 4, 5, 1, 2, 4], dtype=np.float32)))
    assert r.hash != p.hash


def test_user_profile_content():
    p = make_profiles(tiny(), ProfileSettings(profile_titles=2))
    lines = p.users[0].splitlines()
    assert lines[0] == "age: 24, gender: male"
    assert lines[1] == "Favourite genres: Drama"  # genres of liked items 0, 3, 2
    assert lines[2] == "Liked: Alpha (1990); Delta"
    assert lines[3] == "Rated items: 4"
    # user 2 has no demographics: that line is left out, not left blank
    assert p.users[2].splitlines()[0] == "Favourite genres: Drama"
    assert "Liked:" not in p.users[1]


def test_item_profiles_and_names():
    p = make_profiles(tiny())
    assert p.items[0] == "Title: Alpha (1990)\nGenres: Drama"  # year already in the title
    assert p.items[2] == "Title: Gamma"
    assert p.items[3].splitlines()[-1] == "Director: Someone"
    assert p.item_names[:2] == ["Alpha (1990); Drama", "Beta (1991); Comedy, Drama"]
    assert item_fields({"title": "X", "categories": "Books"})["genres"] == "Books"


def test_ready_made_texts_used_as_they_are():
    data = tiny(user_text=["likes A", "likes B", "likes C"], item_text=[f"t{k}\nmore" for k in
                                                                           range(5)],
                item_meta=None)
    p = make_profiles(data)
    assert p.users == ["likes A", "likes B", "likes C"]
    assert p.items[0] == "t0\nmore"
    assert p.item_names[0] == "t0"
    assert p.info["user_source"] == "user_text"


def test_no_item_text_is_an_error():
    with pytest.raises(DataError, match="neither text nor metadata"):
        make_profiles(tiny(item_meta=None))
    with pytest.raises(DataError, match="user_text has 1 entries"):
        make_profiles(tiny(user_text=["x"]))


def test_long_names_are_cut():
    data = tiny(item_meta=[{"title": "A" * 300}] + tiny().item_meta[1:])
    assert len(item_names(data, 40)[0]) == 40


def test_save_load_round_trip_and_tamper_check(tmp_path):
    p = make_profiles(tiny())
    save_profiles(tmp_path, p)
    q = load_profiles(tmp_path)
    assert q.hash == p.hash and q.users == p.users and q.item_names == p.item_names
    assert [a.tolist() for a in q.liked] == [a.tolist() for a in p.liked]
    manifest = json.loads((tmp_path / "profiles" / "manifest.json").read_text())
    assert manifest["data"]["n_train"] == 7 and manifest["n_users"] == 3
    users = tmp_path / "profiles" / "users.jsonl"
    users.write_text(users.read_text().replace("male", "female"))
    with pytest.raises(DataError, match="do not match"):
        load_profiles(tmp_path)
    with pytest.raises(UserError, match="run the `profiles` stage"):
        load_profiles(tmp_path / "elsewhere")


def test_summarize_replaces_user_texts_and_rejects_empty_answers():
    p = make_profiles(tiny())
    seen = []

    def generate(prompts, max_tokens):
        seen.extend(prompts)
        return [f"summary {k}" for k in range(len(prompts))]

    s = summarize_users(p, generate, ProfileSettings(), model_id="m")
    assert s.users == ["summary 0", "summary 1", "summary 2"]
    assert s.items == p.items and s.hash != p.hash and s.info["summarized"]
    assert p.users[0] in seen[0][-1]["content"]
    with pytest.raises(UserError, match="empty summary for 1 users"):
        summarize_users(p, lambda ps, n: ["a", "", "c"], ProfileSettings())


def test_summarize_goes_in_chunks_in_order_and_shows_progress(monkeypatch, capsys):
    from llmhni_local.text import profiles as profiles_mod

    monkeypatch.setattr(profiles_mod, "SUMMARY_CHUNK", 2)
    p = make_profiles(tiny())
    calls = []

    def generate(prompts, max_tokens):
        calls.append(len(prompts))
        return [f"s{sum(calls) - len(prompts) + k}" for k in range(len(prompts))]

    s = summarize_users(p, generate, ProfileSettings(), progress=True)
    assert calls == [2, 1] and s.users == ["s0", "s1", "s2"]
    assert "summarising users" in capsys.readouterr().out
    summarize_users(p, generate, ProfileSettings())  # progress off by default: silent
    assert capsys.readouterr().out == ""
    # one answer short in the first call and one too many in the second: caught per call
    uneven = iter([["a"], ["b", "c"]])
    with pytest.raises(UserError, match="returned 1 answers for 2 prompts"):
        summarize_users(p, lambda ps, n: next(uneven), ProfileSettings())


def test_a_killed_summarising_resumes_after_its_last_stored_chunk(monkeypatch, tmp_path):
    from llmhni_local.text import profiles as profiles_mod

    monkeypatch.setattr(profiles_mod, "SUMMARY_CHUNK", 1)
    p, partial = make_profiles(tiny()), tmp_path / "profiles" / "summaries.partial.jsonl"
    asked = []

    def dies_on_third(prompts, max_tokens):
        if len(asked) == 2:
            raise RuntimeError("killed")
        asked.append(prompts[0][-1]["content"])
        return [f"s{len(asked) - 1}"]

    with pytest.raises(RuntimeError, match="killed"):
        summarize_users(p, dies_on_third, ProfileSettings(), model_id="m", partial=partial)
    assert len(asked) == 2 and partial.is_file()
    with open(partial, "a", encoding="utf-8") as f:
        f.write('{"answers": ["cut sh')  # a kill in the middle of a line
    later = []

    def generate(prompts, max_tokens):
        later.append(prompts[0][-1]["content"])
        return ["s2"]

    s = summarize_users(p, generate, ProfileSettings(), model_id="m", partial=partial)
    assert s.users == ["s0", "s1", "s2"]
    assert len(later) == 1 and p.users[2] in later[0]  # only the third user was asked again
    # another model's answers are never reused: it starts over
    fresh = summarize_users(p, lambda ps, n: ["x"], ProfileSettings(), model_id="other",
                            partial=partial)
    assert fresh.users == ["x", "x", "x"]
    # and another token limit is another key as well
    again = summarize_users(p, lambda ps, n: ["y"], ProfileSettings(summary_tokens=7),
                            model_id="other", partial=partial)
    assert again.users == ["y", "y", "y"]


def test_summarize_through_the_cli_with_tiny_llama(tmp_path, tiny_llama, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from llmhni_local.cli import llm

    monkeypatch.setenv("LLMHNI_CACHE", str(tmp_path / "cache"))
    app = typer.Typer()
    llm.mount(app)
    cfg = tmp_path / "llm.toml"
    cfg.write_text(f'[data]\nmax_users = 3\n[profiles]\nsummary_tokens = 6\n'
                   f'[rater]\nbackend = "transformers"\nmodel = "{tiny_llama}"\n'
                   f'dtype = "float32"\n')
    runner = CliRunner()
    res = runner.invoke(app, ["profiles", str(tmp_path / "plain"), "--config", str(cfg)])
    assert res.exit_code == 0, res.exception
    res = runner.invoke(app, ["profiles", str(tmp_path / "sum"), "--config", str(cfg),
                              "--summarize"])
    assert res.exit_code == 0, res.exception
    plain, summed = load_profiles(tmp_path / "plain"), load_profiles(tmp_path / "sum")
    assert summed.info["summarized"] and summed.info["summary_model"]
    assert summed.items == plain.items and summed.users != plain.users
    assert all(u.strip() for u in summed.users)
    assert not (tmp_path / "sum" / "profiles" / "summaries.partial.jsonl").exists()  # saved


def test_shuffled_profiles_break_the_link_and_keep_the_texts():
    prof = make_profiles(tiny())
    half = shuffle_profiles(prof, 0.6, seed=3)
    # round(0.6 * 3) = 2 users and round(0.6 * 5) = 3 items get another entity's text
    moved_u = [u for u in range(3) if half.users[u] != prof.users[u]]
    moved_i = [i for i in range(5) if half.items[i] != prof.items[i]]
    assert len(moved_u) == 2 and len(moved_i) == 3
    assert set(half.users) <= set(prof.users) and set(half.items) <= set(prof.items)
    assert half.item_names == prof.item_names and half.hash != prof.hash
    assert half.info["shuffled"] == {"share": 0.6, "seed": 3, "users": 2, "items": 3}
    again = shuffle_profiles(prof, 0.6, seed=3)
    assert again.users == half.users and again.items == half.items
    full = shuffle_profiles(prof, 1.0, seed=0)
    assert all(full.items[i] != prof.items[i] for i in range(5))  # never its own text
    assert shuffle_profiles(prof, 0.0, seed=0).users == prof.users
    with pytest.raises(UserError, match="profiles.shuffle_share must be in"):
        ProfileSettings(shuffle_share=1.5)
