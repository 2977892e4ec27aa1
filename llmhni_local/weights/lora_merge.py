"""A LoRA adapter folded into a copy of its base model's weights, for engines that serve plain
models faster than adapters.

vLLM's CPU build applies LoRA per request with slow kernels: on the 2-core test machine
SmolLM2-135M with a rank-16 adapter rated 0.52 judgments/s per request, 4.17/s merged and
3.92/s without an adapter, in one run (docs/BENCHMARKS.md). The tuned weights
``W + (alpha/r) B A`` computed once give the same model (float rounding aside) at the base
model's speed. The merged folder is cached under
``<cache>/merged/<base hash>-<adapter hash>/`` (both sha256, so a changed base or adapter gets
a new folder), written into a temporary folder and renamed into place, so an interrupted merge
leaves nothing that looks finished. Judgments keep the adapter's id: merging changes how the
adapter is applied, not which model rates.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from llmhni_local.core.errors import UserError
from llmhni_local.weights.registry import cache_dir, model_hash

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
DONE_FILE = "merged_from.json"


def merged_dir(base: str | os.PathLike, adapter: str | os.PathLike) -> Path:
    """Where the merge of ``adapter`` into the model folder ``base`` is cached."""
    return cache_dir() / "merged" / f"{model_hash(base)[:16]}-{model_hash(adapter)[:16]}"


def merge_adapter(base: str | os.PathLike, adapter: str | os.PathLike,
                  dest: str | os.PathLike | None = None) -> Path:
    """A model folder holding ``base`` with ``adapter`` merged in (float32); cached, reused.

    Tokenizer, chat template and generation files are copied from ``base`` unchanged, so the
    merged folder renders and tokenises prompts exactly as the base does.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, adapter = Path(base), Path(adapter)
    out = Path(dest) if dest is not None else merged_dir(base, adapter)
    if (out / DONE_FILE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        for f in base.iterdir():  # tokenizer, chat template, generation config, ...
            if f.is_file() and f.suffix not in _WEIGHT_SUFFIXES and not f.name.endswith(
                    ".index.json"):
                shutil.copy2(f, tmp / f.name)
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32,
                                                     local_files_only=True)
        try:
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        except (ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"adapter {adapter} cannot be merged into {base}: {exc}") from exc
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / DONE_FILE).write_text(json.dumps(
            {"base": str(base), "base_sha256": model_hash(base), "adapter": str(adapter),
             "adapter_sha256": model_hash(adapter)}, indent=2))
        if out.exists():  # a half-finished folder from a killed merge
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
