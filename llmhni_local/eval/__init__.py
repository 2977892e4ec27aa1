"""Full-ranking evaluation and noise-identification metrics."""
