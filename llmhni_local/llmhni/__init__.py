"""The LLMHNI method on top of a recommender: candidate selection (stage 5), alignment and the
combined objective. Nothing here imports an LLM engine."""
