"""A tiny random-weight Llama with a locally trained tokenizer and a ChatML chat template.

Nothing is downloaded: the byte-level BPE tokenizer is trained here on a small made-up corpus,
the weights are random (seeded). The model is useless as a rater but exercises every code path
of the backends (chat template, label tokens, logprobs, generation, LoRA) in seconds.

    from tests.llm.tiny import build_tiny_llama
    folder = build_tiny_llama(tmp_path / "tiny")
"""

from __future__ import annotations

import random
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
