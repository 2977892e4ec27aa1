"""Stages 1-2 of the method on the text side: user and item profiles from training
interactions (``profiles``) and their embeddings, in process (``embed``) or on Ray
(``ray_embed``)."""
