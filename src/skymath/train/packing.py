"""Batching without padding waste.

`PackedCollator` flattens the micro-batch's examples into one row (DataCollatorWithFlattening
style): no pad tokens, position ids restart at 0 for every example, and the first label of each
example is -100 so no token predicts across a boundary. transformers turns restarting position
ids into a block-diagonal causal mask (sdpa/eager) or varlen flash-attention (cu_seq_lens), so
each example attends only to itself: the loss equals the unpacked loss, and every optimizer step
still sees exactly micro x accum x world examples.

`PaddedCollator` is the fallback (pads to the longest in the micro-batch, labels -100 and
attention 0 on padding); pair it with length-grouped sampling to keep the padding small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _as_list(x: Any) -> list[int]:
    return x.tolist() if hasattr(x, "tolist") else list(x)


class PackedCollator:
    def __init__(self, flash_attn_kwargs: bool = False) -> None:
        self.flash_attn_kwargs = flash_attn_kwargs

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        cu = [0]
        for f in features:
            x = _as_list(f["input_ids"])
            y = _as_list(f["labels"])
            ids += x
            labels += [-100] + y[1:]
            pos += range(len(x))
            cu.append(cu[-1] + len(x))
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([pos], dtype=torch.long),
        }
        if self.flash_attn_kwargs:
            seq = torch.tensor(cu, dtype=torch.int32)
            longest = max(b - a for a, b in zip(cu, cu[1:], strict=False))
            batch.update(cu_seq_lens_q=seq, cu_seq_lens_k=seq, max_length_q=longest, max_length_k=longest)
        return batch


class PaddedCollator:
    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        seqs = [_as_list(f["input_ids"]) for f in features]
        labs = [_as_list(f["labels"]) for f in features]
        width = max(len(s) for s in seqs)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        n = len(seqs)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, (s, y) in enumerate(zip(seqs, labs, strict=True)):
            input_ids[i, : len(s)] = torch.tensor(s)
            labels[i, : len(y)] = torch.tensor(y)
            mask[i, : len(s)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def padding_fraction(lengths: Sequence[int], micro_batch: int, packing: bool) -> float:
    """Fraction of processed tokens that are padding, for micro-batches taken in the given order."""
    real = padded = 0
    for i in range(0, len(lengths), micro_batch):
        chunk = lengths[i : i + micro_batch]
        real += sum(chunk)
        padded += sum(chunk) if packing else max(chunk) * len(chunk)
    return 1.0 - real / padded if padded else 0.0


def length_grouped_order(lengths: Sequence[int], micro_batch: int, mega: int = 50, seed: int = 0) -> list[int]:
    """Indices shuffled, then sorted by length inside mega-batches of `mega` micro-batches
    (the Trainer's group_by_length idea), for estimating the fallback's padding."""
    import random

    idx = list(range(len(lengths)))
    random.Random(seed).shuffle(idx)
    size = mega * micro_batch
    out: list[int] = []
    for i in range(0, len(idx), size):
        out += sorted(idx[i : i + size], key=lambda j: -lengths[j])
    return out


VARLEN_ATTN = "sdpa_varlen"


def varlen_sdpa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                          dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """Varlen attention without flash-attn (CPU, or GPUs without the package): causal SDPA per packed
    example, from the `cu_seq_lens_q` the packed collator passes. Cost is sum(n_i^2), not (sum n_i)^2
    as with a block-diagonal dense mask. Without cu_seq_lens it is plain causal SDPA (+ padding mask)."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    gqa = key.shape[1] != query.shape[1]
    p = dropout if module.training else 0.0
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        qn, kn = query.shape[2], key.shape[2]
        i = torch.arange(qn, device=query.device)[:, None] + (kn - qn)
        mask = (torch.arange(kn, device=query.device)[None, :] <= i)[None, None]
        if attention_mask is not None and attention_mask.dim() == 2:
            mask = mask & attention_mask[:, None, None, -kn:].bool()
        elif attention_mask is not None:
            mask = attention_mask
        out = sdpa(query, key, value, attn_mask=mask, dropout_p=p, scale=scaling, enable_gqa=gqa)
        return out.transpose(1, 2).contiguous(), None
    bounds = cu.tolist()
    parts = [sdpa(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, dropout_p=p,
                  scale=scaling, enable_gqa=gqa) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register_varlen_attention() -> str:
    """Register `attn_implementation="sdpa_varlen"` with transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(VARLEN_ATTN, varlen_sdpa_attention)
    AttentionMaskInterface.register(VARLEN_ATTN, flash_attention_mask)  # None / 2D: no dense T x T mask
    return VARLEN_ATTN
