"""``adapters validate``: adapters vLLM cannot serve are refused with a message naming why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmhni_local.weights.adapters import (
    AdapterRefused,
    adapter_problems,
    card_markdown,
    validate_adapter,
)


def _peft_adapter(base: Path, folder: Path, **lora) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    cfg = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
           "task_type": "CAUSAL_LM", "bias": "none", **lora}
    get_peft_model(model, LoraConfig(**cfg)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def good_adapter(tiny_llama, tmp_path_factory) -> Path:
    folder = _peft_adapter(tiny_llama, tmp_path_factory.mktemp("ad") / "good")
    (folder / "card.json").write_text(json.dumps({"base_model": {"sha256": "0" * 64}}))
    return folder


def _copy(src: Path, dest: Path, **config_changes) -> Path:
    shutil.copytree(src, dest)
    cfg_path = dest / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    for k, v in config_changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    cfg_path.write_text(json.dumps(cfg))
    return dest


def test_a_servable_adapter_passes(good_adapter):
    assert adapter_problems(good_adapter) == []
    info = validate_adapter(good_adapter)
    assert info["r"] == 8 and sorted(info["target_modules"]) == ["q_proj", "v_proj"]


def test_modules_to_save_is_refused(tiny_llama, tmp_path):
    real = _peft_adapter(tiny_llama, tmp_path / "mts", modules_to_save=["lm_head"])
    (real / "card.json").write_text("{}")
    with pytest.raises(AdapterRefused) as info:
        validate_adapter(real)
    problems = info.value.problems
    assert any("modules_to_save is set; vLLM cannot serve" in p for p in problems)
    # the saved lm_head copy is named too: it is not a LoRA matrix
    assert any("not LoRA matrices" in p and "lm_head" in p for p in problems)
    assert "vLLM cannot serve it" in str(info.value) and "\n" not in str(info.value)


def test_rank_above_the_engines_limit_is_refused(good_adapter, tmp_path):
    big = _copy(good_adapter, tmp_path / "big", r=32)
    (msg,) = adapter_problems(big)  # vLLM's default --max-lora-rank is 16
    assert "rank 32 is above the engine's max_lora_rank (16)" in msg
    assert "--max-lora-rank >= 32" in msg
    assert adapter_problems(big, max_lora_rank=32) == []
    huge = _copy(good_adapter, tmp_path / "huge", r=1024)
    (msg,) = adapter_problems(huge, max_lora_rank=None)
    assert "largest max_lora_rank vLLM accepts (512)" in msg
    pattern = _copy(good_adapter, tmp_path / "pattern", rank_pattern={"q_proj": 64})
    assert "rank 64" in adapter_problems(pattern)[0]


@pytest.mark.parametrize("change,message", [
    ({"task_type": "SEQ_CLS"}, "task_type 'SEQ_CLS' is not CAUSAL_LM"),
    ({"task_type": None}, "task_type is missing (expected CAUSAL_LM)"),
    ({"bias": "lora_only"}, "bias is 'lora_only'"),
    ({"use_dora": True}, "use_dora is set"),
    ({"peft_type": "IA3"}, "peft_type 'IA3' is not LORA"),
])
def test_wrong_settings_are_named(good_adapter, tmp_path, change, message):
    bad = _copy(good_adapter, tmp_path / "bad", **change)
    problems = adapter_problems(bad)
    assert len(problems) == 1 and message in problems[0]


def test_several_problems_are_all_named(good_adapter, tmp_path):
    bad = _copy(good_adapter, tmp_path / "bad", bias="all", r=64, use_dora=True)
    (bad / "card.json").unlink()
    problems = adapter_problems(bad)
    assert len(problems) == 4
    assert any("bias" in p for p in problems) and any("rank 64" in p for p in problems)
    assert any("use_dora" in p for p in problems) and any("card.json" in p for p in problems)


def test_missing_files_are_named(good_adapter, tmp_path):
    assert "does not exist" in adapter_problems(tmp_path / "nowhere")[0]
    no_cfg = _copy(good_adapter, tmp_path / "no_cfg")
    (no_cfg / "adapter_config.json").unlink()
    assert adapter_problems(no_cfg) == [f"adapter folder {no_cfg} lacks adapter_config.json"]
    no_weights = _copy(good_adapter, tmp_path / "no_weights")
    (no_weights / "adapter_model.safetensors").unlink()
    assert "lacks adapter_model.safetensors" in adapter_problems(no_weights)[0]
    no_card = _copy(good_adapter, tmp_path / "no_card")
    (no_card / "card.json").unlink()
    assert "lacks card.json" in adapter_problems(no_card)[0]
    assert adapter_problems(no_card, require_card=False) == []


def test_card_base_model_is_checked(good_adapter, tiny_llama):
    problems = adapter_problems(good_adapter, base=str(tiny_llama))
    assert len(problems) == 1 and "tuned on a base model with sha256 000000000000" in problems[0]


def test_card_markdown_mentions_the_essentials():
    card = {"name": "x", "created": "now",
            "base_model": {"name": "smollm2", "sha256": "a" * 64, "path": "/m"},
            "labels": {"n": 10, "counts": {"High": 5, "Medium": 3, "Low": 2}, "sha256": "b" * 64,
                       "simulated": True},
            "split": {"by": "user", "train_pairs": 8, "train_users": 4, "val_pairs": 2,
                      "val_users": 1},
            "settings": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj"],
                         "epochs": 1, "lr": 1e-3, "batch_size": 8, "class_weights": "balanced",
                         "views": ["user"]},
            "training": {"wall_seconds": 1.0, "seconds_per_example": 0.1, "tuned_layers": 8},
            "validation": {"kappa": 0.25, "weighted_kappa": 0.3, "accuracy": 0.5, "n": 4,
                           "before_tuning": {"kappa": 0.0, "accuracy": 0.4}}}
    md = card_markdown(card)
    assert "SIMULATED" in md and "kappa 0.250" in md and "smollm2" in md and "bbbbbbbb" in md
