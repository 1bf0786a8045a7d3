"""Tokens/s and model FLOPs utilisation (MFU), the two numbers that tell a trainer whether a GPU
allocation is being used well.

Model FLOPs per token = 6 N (forward + backward matmuls over all N parameters) plus causal
attention, 6 x layers x hidden x n per token for a sample of n tokens (QK^T and AV, forward and
backward, halved for causality) -- so a batch of samples of lengths n_i costs
6 N sum(n_i) + 6 L h sum(n_i^2). MFU = achieved model FLOP/s / (devices x dense bf16 peak).
Recomputation by gradient checkpointing is not counted (by convention it lowers MFU).
"""

from __future__ import annotations

from typing import Any

# dense bf16 peak TFLOP/s per device (no sparsity), by a substring of torch.cuda.get_device_name()
PEAK_BF16_TFLOPS: dict[str, float] = {
    "GB200": 2500.0, "B200": 2250.0, "H200": 989.0, "H100": 989.0, "H800": 989.0, "H20": 148.0,
    "A100": 312.0, "A800": 312.0, "A40": 150.0, "A30": 165.0, "A10": 125.0, "L40S": 362.0, "L40": 181.0,
    "L4": 121.0, "RTX 6000 Ada": 364.0, "4090": 165.0, "MI300X": 1307.0, "MI250X": 383.0, "V100": 125.0,
}


def peak_tflops(device_name: str | None, override: float | None = None) -> float | None:
    """Dense bf16 peak of one device, or None when unknown (CPU, an unlisted GPU)."""
    if override:
        return float(override)
    if not device_name:
        return None
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):  # "H200" before "H20", "L40S" before "L40"
        if key in device_name:
            return PEAK_BF16_TFLOPS[key]
    return None


def model_flops(n_params: int, layers: int, hidden: int, tokens: float, sum_sq_len: float) -> float:
    """Training FLOPs of `tokens` tokens in samples whose squared lengths add up to sum_sq_len."""
    return 6.0 * n_params * tokens + 6.0 * layers * hidden * sum_sq_len


def count_params(model: Any) -> int:
    """All parameters, also when ZeRO-3 has partitioned them (ds_numel)."""
    return int(sum(getattr(p, "ds_numel", None) or p.numel() for p in model.parameters()))


def dims(config: Any) -> tuple[int, int]:
    """(layers, hidden) of an HF config (0, 0 when it has no such fields)."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 0
    return int(layers), int(hidden)


def sample_lengths(inputs: dict[str, Any]) -> list[int]:
    """Real (unpadded) sample lengths of a training micro-batch, packed or padded."""
    cu = inputs.get("cu_seq_lens_q")
    if cu is not None:
        b = cu.tolist()
        return [y - x for x, y in zip(b, b[1:], strict=False)]
    mask = inputs.get("attention_mask")
    if mask is not None:
        return [int(x) for x in mask.sum(dim=-1).tolist()]
    pos = inputs.get("position_ids")
    if pos is not None and pos.shape[0] == 1:  # one packed row: a sample starts where positions restart
        row = pos[0].tolist()
        starts = [i for i, v in enumerate(row) if v == 0] + [len(row)]
        return [b - a for a, b in zip(starts, starts[1:], strict=False)]
    ids = inputs["input_ids"]
    return [int(ids.shape[-1])] * int(ids.shape[0])


def format_mfu(mfu: float | None, device: str) -> str:
    return f"MFU {mfu:.3f}" if mfu is not None else f"MFU n/a ({device}: no known peak)"
