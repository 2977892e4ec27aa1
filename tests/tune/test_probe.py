"""The probe rater on the tiny random Llama: labels that depend on a word of the item text are
read back from the hidden state at the answer position (a probe reading another position
could not), the saved probe rates through the backend with the fitted head's probabilities,
and bad input is a one-line error before any model loads."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.tune.probe import ProbeSettings, check_kind, fit_probe, probe_run
from llmhni_local.weights.probe import load_probe, probe_problems
from llmhni_local.weights.registry import is_probe_folder

GENRE_LABEL = {0: "High", 1: "Low", 2: "Medium", 3: "High"}  # synth(): genre = item % 4


def genre_labels(data) -> pd.DataFrame:
    """Every training pair labelled by its item's genre (a word in the item profile)."""
    rows = [{"user": int(u), "item": int(i), "label": GENRE_LABEL[int(i) % 4]}
            for u, i in data.train]
    return pd.DataFrame(rows).drop_duplicates(["user", "item"]).reset_index(drop=True)


def settings(tiny_llama, **kw) -> ProbeSettings:
    return ProbeSettings(**{"base": str(tiny_llama), "dtype": "float32", "folds": 4,
                            "cs": (0.01, 0.1), **kw})


@pytest.fixture(scope="module")
def probe(_rated_template, synth_data, tiny_llama, tmp_path_factory):
    from llmhni_local.text.profiles import load_profiles

    run = tmp_path_factory.mktemp("probe") / "run"
    shutil.copytree(_rated_template, run)
    out = run.parent / "adapters" / "tiny-probe"
    labels = genre_labels(synth_data())
    card = fit_probe(load_profiles(run), labels, out, settings(tiny_llama), log=lambda m: None)
    return run, out, card, labels


def test_probe_reads_the_label_from_the_answer_position(probe, tiny_llama):
    from llmhni_local.weights.registry import model_hash

    _, out, card, labels = probe
    assert card["kind"] == "probe" and card["base_model"]["sha256"] == model_hash(tiny_llama)
    assert card["labels"]["n"] == len(labels) and sum(card["labels"]["counts"].values()) == len(
        labels)
    for view in ("user", "item"):
        fig = card["cv"]["per_view"][view]
        # a constant state (a wrong position: system prompt, padding) gives kappa ~0
        assert fig["kappa"] > 0.4 and fig["auc_low"] > 0.75, (view, fig)
        assert fig["layer"] in card["candidate_layers"] and fig["C"] in (0.01, 0.1)
    assert {"states_seconds", "fit_seconds", "wall_seconds"} <= set(card["timing"])
    assert is_probe_folder(out) and probe_problems(out, base=str(tiny_llama)) == []


def test_probe_rates_through_the_backend_with_the_head_probabilities(probe, tiny_llama):
    from llmhni_local.backends import make_rating_backend
    from llmhni_local.backends.probe_backend import ProbeRater
    from llmhni_local.backends.probe_states import answer_states, load_base
    from llmhni_local.engine.chat import encode_prompts, load_tokenizer, render_prompts
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.plan import WorkItem, judge_requests
    from llmhni_local.text.profiles import load_profiles

    run, out, card, labels = probe
    profiles = load_profiles(run)
    templates = load_templates(tuple(VIEW_TEMPLATES.values()))
    pairs = list(zip(labels["user"][:6], labels["item"][:6]))
    work = [WorkItem(int(u), int(i), v, "") for u, i in pairs for v in ("user", "item")]
    requests = judge_requests(work, profiles, templates, 10)
    prompts = [r.messages for r in requests]
    backend = make_rating_backend(RaterSettings(backend="transformers", model=str(tiny_llama),
                                                adapter=str(out), dtype="float32",
                                                batch_size=5))
    try:
        assert isinstance(backend, ProbeRater)
        assert f"+probe:{out.name}@" in backend.model_id
        got = backend.judge(requests)
        # the view comes with the request: none, or the other view's, is refused
        with pytest.raises(UserError, match="needs the request's view"):
            backend.rate(prompts[:1])
        swapped = dataclasses.replace(requests[0], view="item")
        with pytest.raises(UserError, match="does not end like the item template"):
            backend.judge([swapped])
        assert not type(backend).serves("loglikelihood")
    finally:
        backend.close()
    # the fitted head on each prompt's own state, one prompt at a time (no padding)
    _, heads = load_probe(out)
    tok = load_tokenizer(tiny_llama)
    model = load_base(str(tiny_llama), "float32")
    for k, (messages, j) in enumerate(zip(prompts, got)):
        layer, head = heads["user" if k % 2 == 0 else "item"]
        ids = encode_prompts(tok, render_prompts(tok, [messages]))
        want = head.probs(answer_states(model, ids, [layer], tok.pad_token_id)[:, 0])[0]
        assert np.allclose([j.probs[lab] for lab in ("High", "Medium", "Low")], want, atol=1e-5)
        assert j.label == ("High", "Medium", "Low")[int(np.argmax(want))] and j.label_mass is None


def test_probe_folder_validates_and_rates_a_run(probe, tiny_llama, tmp_path):
    from llmhni_local.weights.adapters import validate_adapter

    _, out, card, _ = probe
    info = validate_adapter(out, base=str(tiny_llama))
    assert info["kind"] == "probe" and set(info["heads"]) == {"user", "item"}
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "probe.safetensors").write_bytes(b"x")
    assert "unreadable" in probe_problems(bad)[0]


def test_probe_for_another_base_model_is_refused_before_weights_load(probe, tiny_llama,
                                                                     tmp_path, monkeypatch):
    import llmhni_local.backends.probe_states as states
    from llmhni_local.backends import make_rating_backend
    from llmhni_local.engine.settings import RaterSettings

    _, out, _, _ = probe
    other = tmp_path / "other-base"
    shutil.copytree(tiny_llama, other)
    (other / "config.json").write_text((other / "config.json").read_text() + " ")  # new hash

    def no_load(*a, **k):
        raise AssertionError("the base model loaded before the probe was checked")

    monkeypatch.setattr(states, "load_base", no_load)
    with pytest.raises(UserError, match="fitted on a base model with sha256"):
        make_rating_backend(RaterSettings(backend="transformers", model=str(other),
                                          adapter=str(out), dtype="float32"))


def test_bad_labels_are_one_line_errors(probe, tiny_llama):
    from llmhni_local.text.profiles import load_profiles

    run, _, _, labels = probe
    profiles = load_profiles(run)
    one = labels.assign(label="High")
    with pytest.raises(UserError, match=r"all \d+ labels are High"):
        fit_probe(profiles, one, run.parent / "x", settings(tiny_llama))
    few = pd.concat([labels[labels["label"] != "Medium"],
                     labels[labels["label"] == "Medium"].head(2)])
    with pytest.raises(UserError, match="too few labels per class .*Medium 2 .*need >= 4"):
        fit_probe(profiles, few, run.parent / "x", settings(tiny_llama))
    with pytest.raises(UserError, match="unknown kind"):
        check_kind("sft")
    assert not (run.parent / "x").exists()


def test_probe_run_records_its_training_pairs(probe, synth_data, tiny_llama, write_labels,
                                              capsys):
    from llmhni_local.audit.importer import import_labels
    from llmhni_local.audit.records import AuditStore, trained_pairs

    run, _, _, labels = probe
    import_labels(run, write_labels(run / "genre.csv", labels.to_dict("records")))
    card = probe_run(run, run.parent / "adapters" / "from-run", settings(tiny_llama),
                     log=lambda m: None, progress=True)
    assert f"probe states: {2 * len(labels)}/{2 * len(labels)}" in capsys.readouterr().out
    assert "+probe:from-run@" in card["adapter_id"]
    assert trained_pairs(run) == {(int(u), int(i)) for u, i in zip(labels["user"],
                                                                    labels["item"])}
    with AuditStore(run) as store:
        assert store.finetune_adapters()[0]["pairs"] == len(labels)
    assert json.loads((run.parent / "adapters" / "from-run" / "card.json").read_text())[
        "labels"]["sources"][0]["rows"] == len(labels)


# ---------------------------------------------------------------------------- the state pass
@pytest.fixture(scope="module")
def deep_tiny(tiny_llama, tiny_prompts):
    """A 5-layer random Llama on the tiny model's tokenizer (the tiny one has 2 layers, too
    few to show where a pass stops) and token ids of prompts of different lengths."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmhni_local.engine.chat import encode_prompts, load_tokenizer, render_prompts

    config = LlamaConfig.from_pretrained(str(tiny_llama))
    config.num_hidden_layers = 5
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).eval()
    tok = load_tokenizer(tiny_llama)
    ids = encode_prompts(tok, render_prompts(tok, tiny_prompts(n=7, seed=3)))
    # lengths differ within a batch, so left padding is exercised
    ids = [r[:len(r) - 5 * (k % 4)] for k, r in enumerate(ids)]
    assert len({len(r) for r in ids}) > 2
    return model, ids, tok.pad_token_id


def _full_pass_states(model, rows, layers, pad_id, batch_size):
    """The reference: the whole causal LM with ``output_hidden_states`` (no early stop)."""
    import torch

    from llmhni_local.engine.chat import batch_tensors

    out = np.zeros((len(rows), len(layers), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(r) for r in rows], kind="stable")
    with torch.inference_mode():
        for b0 in range(0, len(order), batch_size):
            sel = order[b0:b0 + batch_size]
            ids, mask, pos = batch_tensors([rows[k] for k in sel], pad_id)
            got = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                        output_hidden_states=True, logits_to_keep=1, use_cache=False)
            for j, layer in enumerate(layers):
                out[sel, j] = got.hidden_states[layer][:, -1, :].float().numpy()
    return out


@pytest.mark.parametrize("layers", [[0], [2], [5], [0, 2, 5], [4, 1], [3, 3]])
def test_early_stopping_states_equal_the_full_pass(deep_tiny, layers):
    from llmhni_local.backends.probe_states import answer_states

    model, ids, pad = deep_tiny
    got = answer_states(model, ids, layers, pad, batch_size=3)
    want = _full_pass_states(model, ids, layers, pad, batch_size=3)
    assert got.shape == (len(ids), len(layers), model.config.hidden_size)
    assert np.allclose(got, want, atol=1e-5), np.abs(got - want).max()
    assert np.abs(got).sum(axis=-1).min() > 0  # every row written
    if len(set(layers)) > 1:  # different layers give different states
        assert not np.allclose(got[:, 0], got[:, 1], atol=1e-3)


def test_the_pass_reports_each_batch_to_the_progress_bar(deep_tiny):
    from llmhni_local.backends.probe_states import answer_states

    model, ids, pad = deep_tiny
    sizes = []
    answer_states(model, ids, [2], pad, batch_size=3, advance=sizes.append)
    assert sum(sizes) == len(ids) and max(sizes) <= 3
    assert len(sizes) == -(-len(ids) // 3)


def test_the_pass_stops_after_the_deepest_layer_asked_for(deep_tiny):
    from llmhni_local.backends.probe_states import answer_states

    model, ids, pad = deep_tiny
    decoder = model.model
    modules = {f"layer{k}": m for k, m in enumerate(decoder.layers)}
    modules.update(norm=decoder.norm, lm_head=model.lm_head, embed=decoder.embed_tokens)
    calls = dict.fromkeys(modules, 0)
    # transformers itself may keep hooks here (it records output_hidden_states with them)
    before = {n: len(m._forward_hooks) for n, m in modules.items()}

    def counter(name):
        def hook(*_):
            calls[name] += 1
        return hook

    handles = [m.register_forward_hook(counter(n)) for n, m in modules.items()]
    try:
        for layers, ran in [([2], {"embed", "layer0", "layer1"}), ([0], {"embed"}),
                            ([1, 4], {"embed", "layer0", "layer1", "layer2", "layer3"}),
                            ([5], {"embed", "norm", *(f"layer{k}" for k in range(5))})]:
            calls.update(dict.fromkeys(calls, 0))
            answer_states(model, ids, layers, pad, batch_size=4)  # two batches
            assert {n for n, c in calls.items() if c} == ran, (layers, calls)
            assert all(calls[n] == 2 for n in ran), calls
    finally:
        for h in handles:
            h.remove()
    # the pass removed its own hooks
    assert {n: len(m._forward_hooks) for n, m in modules.items()} == before
    with pytest.raises(ValueError, match=r"outside 0\.\.5"):
        answer_states(model, ids, [6], pad)
