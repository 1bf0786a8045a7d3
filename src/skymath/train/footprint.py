"""How much disk an `sft` stage needs, before anything is submitted (`skymath check`, `estimate`).

A checkpoint holds, per parameter (N parameters, Adam, mixed precision as this trainer runs it):

    DeepSpeed ZeRO-2, bf16   2 (bf16 module states) + 12 (fp32 master, m, v) + 2 (HF weights) = 16 N bytes
    DeepSpeed ZeRO-3, bf16   12 (fp32 master, m, v partitions) + 2 (gathered 16-bit HF weights) = 14 N
    no DeepSpeed (fp32 + amp) 4 (HF weights) + 8 (m, v)                                          = 12 N
    DeepSpeed without bf16   4 + 12 + 4                                                          = 20 N

so a 7B ZeRO-2 checkpoint is ~116 GB. While training, `keep_checkpoints` + 1 exist for a moment
(a new one is complete before the oldest leaves), next to the final HF model (2 N in bf16 under
DeepSpeed, else 4 N). After success only the weights of the kept checkpoints stay
(`prune_after_success`).

The parameter count comes, in this order, from the safetensors headers of a local model, its
config.json (dense decoder formula), a config in the local HF hub cache, or the known shapes of
the presets' base models. Light imports only (no torch, no transformers).
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# config.json fields of the models the presets name (the hub is not reachable from a login node)
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-2-7b-hf": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                                 "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                                 "tie_word_embeddings": False},
    "mistralai/Mistral-7B-v0.1": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                                  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                  "tie_word_embeddings": False},
    "deepseek-ai/deepseek-math-7b-base": {"vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008,
                                          "num_hidden_layers": 30, "num_attention_heads": 32,
                                          "num_key_value_heads": 32, "tie_word_embeddings": False},
    "tiny:smollm2": {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "tie_word_embeddings": True},
}


def params_from_config(cfg: dict[str, Any]) -> int | None:
    """Parameters of a dense decoder (LLaMA / Mistral / Qwen2 / SmolLM layout) from its config."""
    try:
        h, layers, inter = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["intermediate_size"])
        vocab, heads = int(cfg["vocab_size"]), int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv_dim = int(cfg.get("num_key_value_heads") or heads) * int(cfg.get("head_dim") or h // heads)
    q_dim = heads * int(cfg.get("head_dim") or h // heads)
    attn = h * q_dim + q_dim * h + 2 * h * kv_dim
    if cfg.get("attention_bias") or cfg.get("model_type") == "qwen2":
        attn += q_dim + 2 * kv_dim
    per_layer = attn + 3 * h * inter + 2 * h
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return layers * per_layer + embed + h


def params_from_safetensors(model_dir: Path) -> int | None:
    """Exact count from the tensor shapes in the safetensors headers (reads only the headers)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, t in header.items():
            if name != "__metadata__":
                total += math.prod(t["shape"])
    return total


def _hub_cache_config(name: str) -> dict[str, Any] | None:
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    snaps = home / "hub" / f"models--{name.replace('/', '--')}" / "snapshots"
    for cfg in sorted(snaps.glob("*/config.json")) if snaps.is_dir() else []:
        try:
            return json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return None


def model_params(ref: str) -> tuple[int | None, str]:
    """(parameter count, where it came from) for a model reference (no `stage:` refs: resolve first)."""
    from skymath.models import TINY_ALIASES

    if ref in TINY_ALIASES:
        ref = "tiny:smollm2"
    p = Path(ref).expanduser()
    if p.is_dir():
        n = params_from_safetensors(p)
        if n:
            return n, f"safetensors headers in {p}"
        if (p / "config.json").is_file():
            n = params_from_config(json.loads((p / "config.json").read_text()))
            if n:
                return n, f"{p / 'config.json'}"
    cached = _hub_cache_config(ref)
    if cached and (n := params_from_config(cached)):
        return n, f"HF cache config of {ref}"
    if ref in KNOWN_CONFIGS:
        return params_from_config(KNOWN_CONFIGS[ref]), f"known shape of {ref}"
    return None, f"unknown: {ref} is not a local model dir and its config is not in the HF cache"


@dataclass
class SFTFootprint:
    stage: str
    model: str
    params: int | None
    params_source: str
    deepspeed: str | None
    bf16: bool
    keep: int
    checkpoint_bytes: int | None  # one resumable checkpoint (all ranks together)
    final_model_bytes: int | None
    peak_bytes: int | None  # keep + 1 checkpoints + the final model
    after_success_bytes: int | None  # kept checkpoints' weights + the final model
    saves: int | None  # checkpoint saves over the stage when its step count is known
    written_bytes: int | None  # total checkpoint bytes written over the stage

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def zero_stage(deepspeed: str | None) -> int | None:
    """ZeRO stage of `zero2` / `zero3` / a DeepSpeed JSON file (None: no DeepSpeed)."""
    if not deepspeed:
        return None
    if deepspeed in ("zero2", "zero3"):
        return int(deepspeed[-1])
    try:
        return int(json.loads(Path(deepspeed).read_text()).get("zero_optimization", {}).get("stage", 0))
    except (OSError, ValueError, AttributeError):
        return 2


def bytes_per_param(deepspeed: str | None, bf16: bool) -> tuple[int, int, int]:
    """(checkpoint, weights kept after pruning, final model) bytes per parameter."""
    stage = zero_stage(deepspeed)
    if stage is not None and bf16:
        return (14 if stage == 3 else 16), 2, 2
    if stage is not None:
        return 20, 4, 4
    return 12, 4, 4


def sft_footprint(cfg: Any, stage: str, steps: int | None = None) -> SFTFootprint:
    """Disk estimate of one sft stage of a loaded pipeline config."""
    from skymath.stages.tokenize import root_model

    spec = cfg.stages[stage]
    p = spec.params
    model = root_model(cfg, stage)
    n, source = model_params(model)
    gpus = (spec.resources.gpus or 0) > 0
    bf16 = p.bf16 if p.bf16 is not None else gpus
    ckpt_pp, kept_pp, final_pp = bytes_per_param(p.deepspeed, bool(bf16))
    steps = steps or p.max_steps
    saves = -(-steps // p.save_steps) if steps else None  # every save_steps, and at the end
    if n is None:
        return SFTFootprint(stage, model, None, source, p.deepspeed, bool(bf16), p.keep_checkpoints,
                            None, None, None, None, saves, None)
    ckpt, final = ckpt_pp * n, final_pp * n
    return SFTFootprint(
        stage=stage, model=model, params=n, params_source=source, deepspeed=p.deepspeed, bf16=bool(bf16),
        keep=p.keep_checkpoints, checkpoint_bytes=ckpt, final_model_bytes=final,
        peak_bytes=(p.keep_checkpoints + 1) * ckpt + final,
        after_success_bytes=(p.keep_checkpoints * kept_pp * n if p.prune_after_success else p.keep_checkpoints * ckpt)
        + final,
        saves=saves, written_bytes=saves * ckpt if saves else None)


def sft_footprints(cfg: Any) -> list[SFTFootprint]:
    """One estimate per sft stage of the config, in config order."""
    return [sft_footprint(cfg, name) for name, spec in cfg.stages.items() if spec.kind == "sft"]


def disk_needed_bytes(footprints: list[SFTFootprint]) -> int:
    """Disk the SFT stages need on the run's file system: earlier stages keep their pruned output
    while a later one trains at its peak (stages of a chain run one after the other)."""
    known = [f for f in footprints if f.peak_bytes is not None]
    if not known:
        return 0
    kept = sum(f.after_success_bytes or 0 for f in known)
    return max(kept - (f.after_success_bytes or 0) + (f.peak_bytes or 0) for f in known)


def format_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def footprint_lines(cfg: Any) -> list[str]:
    """Text for `skymath estimate`: one line per sft stage and the disk the run directory needs."""
    fps = sft_footprints(cfg)
    if not fps:
        return []
    out = ["", f"{'sft stage':<12} {'params':>9} {'zero':>6} {'checkpoint':>11} {'keep':>4} {'final model':>12} "
               f"{'peak disk':>10} {'after success':>13} {'saves':>6} {'written':>9}"]
    for f in fps:
        out.append(f"{f.stage:<12} {(f'{f.params / 1e9:.2f}B' if f.params else '?'):>9} {str(f.deepspeed or '-'):>6} "
                   f"{format_bytes(f.checkpoint_bytes):>11} {f.keep:>4} {format_bytes(f.final_model_bytes):>12} "
                   f"{format_bytes(f.peak_bytes):>10} {format_bytes(f.after_success_bytes):>13} "
                   f"{(f.saves if f.saves is not None else '?')!s:>6} {format_bytes(f.written_bytes):>9}")
    out.append(f"SFT disk needed on the run's file system: {format_bytes(disk_needed_bytes(fps))} "
               f"(parameters: {'; '.join(sorted({f.params_source for f in fps}))})")
    return out
