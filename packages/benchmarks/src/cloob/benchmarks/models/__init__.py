"""Models under evaluation: loading checkpoints, and the embeddings they produce."""
