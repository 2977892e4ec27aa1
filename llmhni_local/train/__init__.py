"""Losses, negative samplers, objectives and the training loop."""
