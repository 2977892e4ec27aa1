"""A tiny sentence-transformers folder with a stack like EmbeddingGemma's, built offline.

A 2-layer random BERT (hidden 32) with a WordPiece tokenizer made here from a small vocabulary,
stacked Transformer -> Pooling(mean) -> Dense(32->48) -> Dense(48->32) -> Normalize, with the
named prompts ``query`` and ``doc``, saved by ``SentenceTransformer.save``. Nothing is
downloaded; the weights are random (seeded).

    folder = build_tiny_st(tmp_path / "tiny_st")
"""

from __future__ import annotations

from pathlib import Path

PROMPTS = {"query": "q: ", "doc": "d: "}
_WORDS = ("the a of and user item film movie likes liked rated watched drama comedy action "
          "thriller romance toy story star wars fargo heat babe alien q d title none text "
          "query search result task 1995 1977").split()


def build_tiny_bert(folder: str | Path, seed: int = 0) -> Path:
    """A plain Hugging Face BERT folder (no ``modules.json``): 2 layers, hidden 32."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *letters, *"0123456789:|.,",
             *(f"##{c}" for c in letters)]  # unknown words fall back to letters, not [UNK]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(str(folder))
    return folder


def build_tiny_st(folder: str | Path, seed: int = 0) -> Path:
    """The tiny BERT as a sentence-transformers folder with two Dense layers and prompts."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    folder = Path(folder)
    bert = build_tiny_bert(folder.parent / f"{folder.name}_bert", seed)
    torch.manual_seed(seed)
    word = st.Transformer(str(bert), max_seq_length=64)
    model = SentenceTransformer(
        modules=[word, st.Pooling(32, pooling_mode="mean"), st.Dense(32, 48), st.Dense(48, 32),
                 st.Normalize()],
        prompts=dict(PROMPTS), device="cpu")
    model.save(str(folder))
    return folder
