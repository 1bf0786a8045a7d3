"""Generation backends for evaluation, imported lazily by name:

    hf      transformers, batched greedy generate on CPU or GPU (the embedded default)
    vllm    vLLM offline `LLM.generate` (GPU clusters; `pip install skymath[vllm]`)
    openai  an OpenAI-compatible endpoint through the synthesis client (API models)

Each backend takes prompts in request order and returns one `Generation` per prompt, in the
same order (`index` = the request's position).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from skymath.errors import UserError
from skymath.evaluate.backends.base import Backend, Generation

BACKENDS = {"hf": "skymath.evaluate.backends.hf", "vllm": "skymath.evaluate.backends.vllm",
            "openai": "skymath.evaluate.backends.openai"}

__all__ = ["BACKENDS", "Backend", "Generation", "load_backend"]


def load_backend(name: str, model: str, **options: Any) -> Backend:
    """Import backend `name` and build it for `model` (a resolved path, hub name or API model)."""
    if name not in BACKENDS:
        raise UserError(f"unknown eval backend {name!r} (known: {', '.join(BACKENDS)})")
    return import_module(BACKENDS[name]).build(model, **options)
