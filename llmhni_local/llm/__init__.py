"""The LLM layer: models, backends, prompts, profiles, embeddings, rating, judgment store.

Nothing here imports torch-geometric; heavy imports (torch, vLLM, transformers) happen inside
the functions that need them.
"""
