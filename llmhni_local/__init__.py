"""llmhni_local: offline LLM-assisted denoising of recommender training data (LLMHNI)."""

__version__ = "0.1.0"
