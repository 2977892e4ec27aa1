"""LoRA fine-tuning of the tiny random Llama: a servable adapter with its card, prompts as the
rating stage builds them, the frozen-layer cache, rating with the adapter through transformers
and vLLM (stored beside the base model's judgments), and resuming after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmhni_local.audit.export import write_table
from llmhni_local.audit.importer import import_labels
from llmhni_local.audit.records import AuditStore, labels_hash
from llmhni_local.audit.simulated_audits import simulate_sample
from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.judgments.plan import RateSettings
from llmhni_local.judgments.run import checked_rater_id, rate_candidates
from llmhni_local.judgments.store import JudgmentStore
from llmhni_local.tune.finetune import (
    FinetuneSettings,
    Runner,
    answer_targets,
    answer_tokens,
    build_examples,
    finetune,
    finetune_run,
    lora_config,
    split_labels,
)
from llmhni_local.weights.adapters import adapter_problems, validate_adapter

REPO = Path(__file__).resolve().parents[2]


def tiny_settings(tiny_llama, **kw) -> FinetuneSettings:
    return FinetuneSettings(**{"base": str(tiny_llama), "epochs": 2, "batch_size": 8,
                               "last_layers": 1, "val_share": 0.25, "min_val_users": 2,
                               "lr": 5e-3, **kw})


@pytest.fixture(scope="module")
def audited_run(_rated_template, synth_data, tmp_path_factory) -> Path:
    """The rated synthetic run with every non-candidate training pair labelled (simulated)."""
    run = tmp_path_factory.mktemp("ft") / "run"
    shutil.copytree(_rated_template, run)
    frame, _ = simulate_sample(run, 1000, pool="train", data=synth_data())
    import_labels(run, write_table(frame, run / "sim.csv"))
    return run


@pytest.fixture(scope="module")
def tuned(audited_run, tiny_llama) -> tuple[Path, dict, list[str]]:
    out = audited_run.parent / "adapters" / "tiny-tuned"
    logs: list[str] = []
    card = finetune_run(audited_run, out, tiny_settings(tiny_llama), progress=False,
                        log=logs.append)
    return out, card, logs


def test_adapter_is_servable_and_has_its_card(tuned, audited_run, tiny_llama):
    from llmhni_local.weights.registry import model_hash

    out, card, logs = tuned
    for name in ("adapter_config.json", "adapter_model.safetensors", "card.json", "README.md",
                 "pairs.json"):
        assert (out / name).is_file(), name
    assert not (out.parent / ".tiny-tuned.work").exists()  # checkpoints removed when done
    assert adapter_problems(out) == []
    assert validate_adapter(out, base=str(tiny_llama))["r"] == 16
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM" and cfg["bias"] == "none"
    assert not cfg.get("modules_to_save") and cfg["r"] == 16 and cfg["lora_alpha"] == 32
    assert cfg["layers_to_transform"] == [1]  # last_layers=1 of 2
    saved = json.loads((out / "card.json").read_text())
    assert saved["base_model"]["sha256"] == model_hash(tiny_llama)
    with AuditStore(audited_run) as store:
        labels = store.labels()
    assert saved["labels"]["sha256"] == labels_hash(labels) and saved["labels"]["simulated"]
    assert saved["labels"]["n"] == len(labels) and saved["labels"]["sources"][0]["sha256"]
    assert saved["split"]["by"] == "user"
    assert isinstance(saved["validation"]["kappa"], float)
    assert [h["epoch"] for h in saved["history"]] == [0, 1, 2]
    assert saved["training"]["frozen_prefix_cache"] is True
    assert any("epoch 2/2" in line for line in logs)
    # held out by user: no validation user has a training pair
    pairs = json.loads((out / "pairs.json").read_text())
    train_users = {u for u, _ in pairs["train"]}
    assert not train_users & {u for u, _ in pairs["validation"]}
    assert len(pairs["train"]) + len(pairs["validation"]) == len(labels)
    # the training pairs are recorded, so reports leave them out
    with AuditStore(audited_run) as store:
        assert store.finetune_pairs("train") == {tuple(p) for p in pairs["train"]}
        assert store.finetune_pairs("validation") == {tuple(p) for p in pairs["validation"]}
    assert card["adapter_id"].endswith(f"+lora:tiny-tuned@{model_hash(out)[:12]}")


def test_examples_are_the_rating_prompts(audited_run, tiny_llama):
    from llmhni_local.engine.chat import encode_prompts, load_tokenizer, render_prompts
    from llmhni_local.engine.labels import label_token_ids
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.judgments.plan import view_messages
    from llmhni_local.text.profiles import load_profiles

    tok = load_tokenizer(tiny_llama)
    prof = load_profiles(audited_run)
    tpl = load_templates(tuple(VIEW_TEMPLATES.values()))
    ex = build_examples([(2, 3), (5, 1)], ["Medium", "Low"], prof, tpl, tok, ("user", "item"),
                        10, 4096)
    assert ex.view.tolist() == ["user", "item", "user", "item"]
    msgs = [view_messages(v, u, i, prof, tpl[VIEW_TEMPLATES[v]], 10)
            for (u, i) in [(2, 3), (5, 1)] for v in ("user", "item")]
    assert ex.ids == encode_prompts(tok, render_prompts(tok, msgs))
    ids = label_token_ids(tok)
    assert [list(ids.values())[t] for t in ex.target] == [ids["Medium"]] * 2 + [ids["Low"]] * 2
    with pytest.raises(UserError, match="longer than 20 tokens"):
        build_examples([(2, 3)], ["High"], prof, tpl, tok, ("user",), 10, 20)
    # the whole answer: the label's tokens, then the end-of-turn token; the input holds all
    # but the last, so the last len(answer) outputs predict it
    answers = answer_tokens(tok)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert all(a[0] == ids[lab] and a[-1] == end for lab, a in answers.items())
    full = build_examples([(2, 3), (5, 1)], ["Medium", "Low"], prof, tpl, tok, ("user", "item"),
                          10, 4096, answers)
    for row, prompt, a in zip(full.ids, ex.ids, full.answer):
        assert row == prompt + a[:-1]
    rows, cols, toks, first, k = answer_targets([[7], [8, 9, 10], [11, 12]])
    assert k == 3 and first.tolist() == [2, 0, 1]
    assert list(zip(rows.tolist(), cols.tolist(), toks.tolist())) == [
        (0, 2, 7), (1, 0, 8), (1, 1, 9), (1, 2, 10), (2, 1, 11), (2, 2, 12)]


def test_frozen_layer_cache_gives_the_full_pass(audited_run, tiny_llama, tmp_path):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from llmhni_local.engine.chat import load_tokenizer
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.text.profiles import load_profiles

    tok = load_tokenizer(tiny_llama)
    ex = build_examples([(0, 1), (3, 4), (7, 2)], ["High", "Low", "High"],
                        load_profiles(audited_run), load_templates(tuple(VIEW_TEMPLATES.values())),
                        tok, ("user", "item"), 10, 4096)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_llama)),
                           lora_config(tiny_settings(tiny_llama), 2))
    runner = Runner(model, tok.pad_token_id, "float32", cut=1)
    assert runner.cut == 1
    assert runner.check(ex, list(range(6))) < 1e-4  # different lengths: padding included
    names = [n for n, _ in model.named_parameters()]
    runner.build_cache("x", ex, 4)
    assert [n for n, _ in model.named_parameters()] == names  # layers restored after a call
    # and training with the cache ends with the same adapter as training without it
    a = finetune_run(audited_run, tmp_path / "cached", tiny_settings(tiny_llama, epochs=1),
                     progress=False, log=lambda _: None)
    b = finetune_run(audited_run, tmp_path / "full",
                     tiny_settings(tiny_llama, epochs=1, cache_frozen=False),
                     progress=False, log=lambda _: None)
    assert a["training"]["frozen_prefix_cache"] and not b["training"]["frozen_prefix_cache"]
    # equal up to float noise (which Adam's normalised steps amplify to ~1e-5 here)
    _assert_same_weights(tmp_path / "cached", tmp_path / "full", atol=1e-4)
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["val"]["loss"] == pytest.approx(hb["val"]["loss"], rel=1e-5)


def test_a_tuned_model_answers_with_the_bare_label(audited_run, tiny_llama, tmp_path):
    """Trained on the whole answer (label, then end of turn), the greedy answer is the label
    alone and parses; the random tiny model answers gibberish before."""
    import pandas as pd

    from llmhni_local.backends import make_rating_backend
    from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
    from llmhni_local.judgments.plan import view_messages
    from llmhni_local.text.profiles import load_profiles

    prof = load_profiles(audited_run)
    labels = pd.DataFrame({"user": np.repeat(np.arange(8), 4), "item": np.tile(np.arange(4), 8),
                           "label": "Low"})
    out = tmp_path / "always-low"
    finetune(prof, labels, out, tiny_settings(tiny_llama, epochs=6, lr=2e-2, val_share=0.0),
             progress=False, log=lambda _: None)
    tpl = load_templates(tuple(VIEW_TEMPLATES.values()))
    prompts = [view_messages(v, u, i, prof, tpl[VIEW_TEMPLATES[v]], 10)
               for u, i in [(12, 5), (14, 9)] for v in ("user", "item")]
    import dataclasses

    # decided by parsing the text: the untuned model's text is no label, the tuned one's is
    parse = dataclasses.replace(_rater(tiny_llama, "transformers"), decide="parse")
    with make_rating_backend(parse) as base:
        assert all(j.label is None for j in base.rate(prompts))
    with make_rating_backend(dataclasses.replace(parse, adapter=str(out))) as tuned:
        got = tuned.rate(prompts)
    assert [j.text for j in got] == ["Low"] * 4 and [j.label for j in got] == ["Low"] * 4


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    """The two adapters' LoRA matrices agree to ``atol`` (0: bit for bit)."""
    from safetensors.torch import load_file

    wa = load_file(str(a / "adapter_model.safetensors"))
    wb = load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        diff = float(np.abs(wa[k].numpy() - wb[k].numpy()).max())
        assert diff <= atol, (k, diff)


def _rater(tiny_llama, backend: str, adapter: Path | None = None,
           lora_mode: str = "auto") -> RaterSettings:
    return RaterSettings(backend=backend, model=str(tiny_llama), dtype="float32",
                         max_model_len=1024, adapter=str(adapter) if adapter else None,
                         lora_mode=lora_mode)


def _rate(run: Path, settings: RaterSettings):
    from llmhni_local.backends import make_rating_backend

    mid, adapter = checked_rater_id(settings)
    rate_candidates(run, lambda: make_rating_backend(settings), model_id=mid, adapter=adapter,
                    settings=RateSettings(max_failure_share=1.0), progress=False)
    return mid, adapter


def test_tuned_and_base_judgments_sit_side_by_side(tuned, audited_run, tiny_llama, tmp_path,
                                                    synth_data):
    out, _, _ = tuned
    run = tmp_path / "run"
    shutil.copytree(audited_run, run)
    base_id, base_adapter = _rate(run, _rater(tiny_llama, "transformers"))
    tuned_id, tuned_adapter = _rate(run, _rater(tiny_llama, "transformers", out))
    assert base_adapter == "" and tuned_adapter == "tiny-tuned"
    assert tuned_id.startswith(base_id + "+lora:tiny-tuned@")
    with JudgmentStore(run) as store:
        rows = store.frame()
    groups = rows.groupby(["model_id", "adapter"]).size().to_dict()
    n = groups[("fake@0", "")]
    assert groups == {("fake@0", ""): n, (base_id, ""): n, (tuned_id, "tiny-tuned"): n}
    a = rows[rows["model_id"] == base_id].sort_values(["user", "item", "view"])
    b = rows[rows["model_id"] == tuned_id].sort_values(["user", "item", "view"])
    assert np.abs(a["p_high"].to_numpy() - b["p_high"].to_numpy()).max() > 1e-3  # it is applied
    # the audit report evaluates the three raters on the same (non-training) pairs
    from llmhni_local.audit.report import evaluate

    frame, _ = simulate_sample(run, 10, data=synth_data())
    import_labels(run, write_table(frame, run / "cands.csv"))
    result = evaluate(run)
    assert {(r["model_id"], r["adapter"]) for r in result["raters"]} == set(groups)
    assert result["excluded_finetune_pairs"] > 0


def test_a_merged_adapter_is_the_tuned_model_and_is_cached(tuned, tiny_llama, tmp_path,
                                                          monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmhni_local.weights.lora_merge import DONE_FILE, merge_adapter, merged_dir

    monkeypatch.setenv("LLMHNI_CACHE", str(tmp_path / "cache"))
    out, _, _ = tuned
    merged = merge_adapter(tiny_llama, out)
    assert merged == merged_dir(tiny_llama, out) and (merged / DONE_FILE).is_file()
    assert (merged / "tokenizer_config.json").read_text() == \
        (tiny_llama / "tokenizer_config.json").read_text()
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    assert merge_adapter(tiny_llama, out) == merged  # reused, not written again
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp
    ids = torch.tensor([[5, 17, 42, 99, 3, 64]])
    kw = dict(dtype=torch.float32, local_files_only=True)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama, **kw), out)
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama, **kw)
    folded = AutoModelForCausalLM.from_pretrained(merged, **kw)
    with torch.no_grad():
        a, b, c = (m.eval()(ids).logits for m in (peft, folded, plain))
    assert torch.allclose(a, b, atol=1e-4)
    assert (a - c).abs().max() > 1e-3  # the adapter changes the model, and the merge keeps it


@pytest.mark.slow
@pytest.mark.parametrize("lora_mode", ["request", "merged"])
def test_vllm_rates_with_the_adapter_as_transformers_does(tuned, audited_run, tiny_llama, tmp_path,
                                                          lora_mode, monkeypatch):
    monkeypatch.setenv("LLMHNI_CACHE", str(tmp_path / "cache"))
    out, _, _ = tuned
    hf_run, vl_run = tmp_path / "hf", tmp_path / "vllm"
    shutil.copytree(audited_run, hf_run)
    shutil.copytree(audited_run, vl_run)
    hf_id, _ = _rate(hf_run, _rater(tiny_llama, "transformers", out))
    vl_id, vl_adapter = _rate(vl_run, _rater(tiny_llama, "vllm", out, lora_mode))  # one engine
    assert vl_id == hf_id and vl_adapter == "tiny-tuned"
    with JudgmentStore(hf_run) as s:
        a = s.frame()
    with JudgmentStore(vl_run) as s:
        b = s.frame()
    a = a[a["model_id"] == hf_id].reset_index(drop=True)
    b = b[b["model_id"] == vl_id].reset_index(drop=True)
    assert len(a) == len(b) > 0
    assert (a[["user", "item", "view", "text", "label"]].fillna("-")
            == b[["user", "item", "view", "text", "label"]].fillna("-")).all().all()
    for c in ("p_high", "p_medium", "p_low"):
        assert np.allclose(a[c].to_numpy(), b[c].to_numpy(), atol=1e-4), c


RESUME_SCRIPT = '''
import os, signal, sys
sys.path.insert(0, {repo!r})
from llmhni_local.tune.finetune import FinetuneSettings, finetune_run

run, out, base, threads = sys.argv[1:5]
import torch
torch.set_num_threads(int(threads))  # the parent's count: float sums then add up alike
settings = FinetuneSettings(base=base, epochs=3, batch_size=8, last_layers=1, val_share=0.25,
                            min_val_users=2, lr=5e-3)

def on_epoch(epoch):
    if epoch == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, right after the checkpoint

finetune_run(run, out, settings, progress=False, on_epoch=on_epoch)
'''


def test_a_killed_run_resumes_after_its_last_epoch(audited_run, tiny_llama, tmp_path):
    import torch

    script = tmp_path / "killed.py"
    script.write_text(RESUME_SCRIPT.format(repo=str(REPO)))
    out = tmp_path / "adapters" / "resumed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script), str(audited_run), str(out),
                           str(tiny_llama), str(torch.get_num_threads())], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    work = out.parent / ".resumed.work"
    # the Trainer's checkpoint of epoch 1 (the step count of one epoch), nothing later
    saved = [p.name for p in work.glob("checkpoint-*")]
    assert len(saved) == 1 and not out.exists()
    state = json.loads((work / saved[0] / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and saved[0] == f"checkpoint-{state['global_step']}"
    settings = tiny_settings(tiny_llama, epochs=3)
    logs: list[str] = []
    card = finetune_run(audited_run, out, settings, progress=False, log=logs.append)
    assert any("resuming after epoch 1 of 3" in line for line in logs)
    assert card["training"]["resumed_after_epoch"] == 1
    assert [h["epoch"] for h in card["history"]] == [0, 1, 2, 3]
    assert not work.exists()
    # the same adapter as a run that was never killed, bit for bit: the Trainer's checkpoint
    # restores weights, optimiser, schedule and RNG states, and the epoch's batches are seeded
    whole = finetune_run(audited_run, tmp_path / "adapters" / "whole", settings, progress=False,
                         log=lambda _: None)
    _assert_same_weights(out, tmp_path / "adapters" / "whole", atol=0.0)
    assert card["validation"]["kappa"] == pytest.approx(whole["validation"]["kappa"], nan_ok=True)


def test_a_shared_prefix_memo_changes_only_the_work_done(tuned, audited_run, tiny_llama,
                                                         tmp_path):
    out, card, _ = tuned
    assert card["training"]["prefix_states_reused"] == 0
    memo: dict = {}
    first = finetune_run(audited_run, tmp_path / "m1", tiny_settings(tiny_llama),
                         progress=False, log=lambda _: None, prefix_memo=memo)
    again = finetune_run(audited_run, tmp_path / "m2", tiny_settings(tiny_llama),
                         progress=False, log=lambda _: None, prefix_memo=memo)
    n = card["split"]["train_pairs"] + card["split"]["val_pairs"]
    assert first["training"]["prefix_states_reused"] == 0
    assert again["training"]["prefix_states_reused"] == 2 * n  # every prompt, both views
    _assert_same_weights(out, tmp_path / "m1", atol=1e-6)
    _assert_same_weights(out, tmp_path / "m2", atol=1e-6)


def test_length_batches_cover_every_example_once():
    from llmhni_local.tune.finetune import length_batches

    lengths = np.random.default_rng(0).integers(150, 300, 103)
    for rng in (None, np.random.default_rng(1)):
        batches = length_batches(lengths, 8, rng)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(103)) and len(batches) == 13
        padding = np.mean([np.ptp(lengths[b]) for b in batches])
        random_order = np.random.default_rng(3).permutation(103)
        padding_random = np.mean([np.ptp(lengths[random_order[k:k + 8]])
                                  for k in range(0, 103, 8)])
        assert padding < padding_random / 4  # similar lengths share a batch
    a = length_batches(lengths, 8, np.random.default_rng(1))
    b = length_batches(lengths, 8, np.random.default_rng(2))
    assert [x.tolist() for x in a] != [x.tolist() for x in b]  # epochs see other batches


def test_reuse_gives_back_the_same_adapter_and_refuses_other_inputs(tuned, audited_run,
                                                                    tiny_llama):
    from llmhni_local.tune.finetune import card_fingerprint

    out, card, _ = tuned
    stamp = (out / "adapter_model.safetensors").stat().st_mtime_ns
    logs: list[str] = []
    again = finetune_run(audited_run, out, tiny_settings(tiny_llama), progress=False,
                         log=logs.append, reuse=True)
    assert again == card and any("reused" in line for line in logs)
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    assert card_fingerprint(card) is not None and card_fingerprint({"settings": {}}) is None
    with pytest.raises(UserError, match="other labels or settings"):
        finetune_run(audited_run, out, tiny_settings(tiny_llama, epochs=1), progress=False,
                     log=lambda _: None, reuse=True)
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == stamp

    other = audited_run.parent / "not-an-adapter"  # a folder without a card is never replaced
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="no card"):
        finetune_run(audited_run, other, tiny_settings(tiny_llama), progress=False,
                     log=lambda _: None, reuse=True)
    assert [f.name for f in other.iterdir()] == ["notes.txt"]


def test_changed_settings_start_over(audited_run, tiny_llama, tmp_path):
    out = tmp_path / "a"
    work = tmp_path / ".a.work"
    (work / "checkpoint-4").mkdir(parents=True)
    (work / "fingerprint.txt").write_text("something else\n")
    (work / "checkpoint-4" / "trainer_state.json").write_text('{"epoch": 1, "global_step": 4}')
    logs: list[str] = []
    card = finetune_run(audited_run, out, tiny_settings(tiny_llama, epochs=1), progress=False,
                        log=logs.append)
    assert any("starting over" in line for line in logs)
    assert card["training"]["resumed_after_epoch"] == 0


def test_refusals(audited_run, tiny_llama, tuned, tmp_path):
    out, _, _ = tuned
    with pytest.raises(UserError, match="exists; choose another --out or pass --force"):
        finetune_run(audited_run, out, tiny_settings(tiny_llama))
    with pytest.raises(ConfigError, match="finetune.views"):
        FinetuneSettings(views=("user", "nope"))
    with pytest.raises(ConfigError, match="finetune.val_share"):
        FinetuneSettings(val_share=1.0)
    empty = tmp_path / "empty"
    shutil.copytree(audited_run, empty)
    (empty / "audit" / "audit.sqlite").unlink()
    with pytest.raises(UserError, match="no audited labels"):
        finetune_run(empty, tmp_path / "x", tiny_settings(tiny_llama))


def test_split_by_user_and_by_pair():
    users = np.repeat(np.arange(40), 5)
    tr, va, how = split_labels(users, 0.2, seed=1)
    assert how == "user" and len(va) == 40 and not set(users[tr]) & set(users[va])
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(200))
    assert split_labels(users, 0.1, seed=1)[2] == "pair"  # 4 users < min_val_users 5
    tr, va, how = split_labels(np.zeros(10, dtype=int), 0.3)  # one user: by pair
    assert how == "pair" and len(va) == 3 and len(tr) == 7
    tr, va, how = split_labels(users, 0.2, by="pair", seed=1)
    assert how == "pair" and len(va) == 40
    assert split_labels(users, 0.0)[2] == "none"
