"""Synthesis engine: a resumable OpenAI-compatible client and the three augmentation methods."""
