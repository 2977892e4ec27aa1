"""What does LLMHNI beat? The baselines the paper sets beside it, in the same trainer, data,
samplers and evaluation (docs/BASELINES.md): WBPR and DNS (negatives), BOD (learned interaction
weights), SimGCL and XSimGCL (noise-perturbed contrast), RLMRec-Con and RLMRec-Gen (alignment
with the profile embeddings). Each module cites its paper and the defaults it takes."""
