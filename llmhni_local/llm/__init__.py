"""The rater room: models, backends, prompts, chat rendering, labels, profiles, embeddings,
rating, the judgment store, adapter folders and their checks, and the fitted probe as served.
Everything a tuned or zero-shot rater needs to rate sits here; tuning, audits and verdicts
are rooms above it.

Nothing here imports torch-geometric; heavy imports (torch, vLLM, transformers) happen inside
the functions that need them.
"""
