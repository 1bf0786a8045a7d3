"""Seed and benchmark loaders (local JSONL files, or HF datasets / paths on a cluster)."""
