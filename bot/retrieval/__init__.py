"""Embedding, batching, the knowledge index over Chroma and its ranking."""
