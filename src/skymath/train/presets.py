"""Recipe presets for the paper's three base models (Skywork-Math §SFT).

Shared: 3 epochs, global batch 32, AdamW with weight decay 0, warm-up ratio 0.03, max length 2048,
8 GPUs per node. Only the learning rate differs: 2e-5 for LLaMA2-7B, 2e-6 for Mistral-7B and
DeepSeekMath-7B. A preset supplies defaults; any key set explicitly in the stage params wins.
"""

from __future__ import annotations

from typing import Any

COMMON: dict[str, Any] = {
    "epochs": 3.0,
    "global_batch_size": 32,
    "weight_decay": 0.0,
    "warmup_ratio": 0.03,
    "max_length": 2048,
    "scheduler": "cosine",
    "packing": True,
    "bf16": True,
    "gradient_checkpointing": True,
    "deepspeed": "zero2",
    "micro_batch_size": 4,  # 1 node x 8 GPUs x 4 x accum 1 = 32
    "prompt_style": "alpaca",
}

PRESETS: dict[str, dict[str, Any]] = {
    "llama2-7b": {**COMMON, "model": "meta-llama/Llama-2-7b-hf", "lr": 2e-5},
    "mistral-7b": {**COMMON, "model": "mistralai/Mistral-7B-v0.1", "lr": 2e-6},
    "deepseekmath-7b": {**COMMON, "model": "deepseek-ai/deepseek-math-7b-base", "lr": 2e-6},
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def apply_preset(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw params with the preset's values filled in where the user set nothing."""
    name = raw.get("preset")
    if not name:
        return raw
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(preset_names())})")
    return {**PRESETS[name], **raw}
