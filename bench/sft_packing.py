"""Padding waste and CPU training throughput: padding-free packing vs the stage's REAL fallback,
length-grouped padded micro-batches.

When packing is off (or unavailable: no flash-attn on a GPU), train/sft.py samples with
transformers' `LengthGroupedSampler` (mega-batches of 50 micro-batches sorted by length) and pads
each micro-batch to its longest example with `PaddedCollator`, attention `sdpa`. This bench builds
that exact order over 20K recipe-shaped lengths, then times `--steps` of its micro-batches (drawn
at random from the whole order) both ways, on identical examples per step: packed into one row
(varlen attention) and padded (sdpa + padding mask), with two copies of the same model. Steps
alternate which mode runs first so machine-speed drift hits both. Randomly ordered padded batches
are reported (padding only) as what grouping avoids.

Lengths follow the recipe's shape (most samples a few hundred tokens, ~6% over 512, a thin tail
to 2048).

    python bench/sft_packing.py [--steps 8] [--micro 8]
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import time


def recipe_lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.01:
            out.append(rng.randint(1024, 2048))
        else:
            out.append(int(min(2048, max(48, rng.lognormvariate(math.log(280), 0.4)))))
    return out


def grouped_micro_batches(lengths: list[int], micro: int, accum: int, seed: int) -> list[list[int]]:
    """The fallback's micro-batches: LengthGroupedSampler(batch_size=micro*accum) order, cut into
    `micro` consecutive indices (what the Trainer's DataLoader does)."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    g = torch.Generator().manual_seed(seed)
    order = list(LengthGroupedSampler(micro * accum, lengths=lengths, generator=g))
    return [order[i:i + micro] for i in range(0, len(order), micro)]


def main() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from skymath.train.packing import (
        PackedCollator,
        PaddedCollator,
        padding_fraction,
        register_varlen_attention,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--accum", type=int, default=1, help="gradient accumulation (the sampler's batch = micro * accum)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    lengths = recipe_lengths(20000)
    over512 = sum(n > 512 for n in lengths) / len(lengths)
    batches = grouped_micro_batches(lengths, a.micro, a.accum, seed=0)
    grouped = [lengths[i] for b in batches for i in b]
    pad_packed = padding_fraction(lengths, a.micro, packing=True)
    pad_random = padding_fraction(lengths, a.micro, packing=False)
    pad_grouped = padding_fraction(grouped, a.micro, packing=False)
    print(f"lengths: n={len(lengths)} median={sorted(lengths)[len(lengths) // 2]} >512={over512:.1%} max={max(lengths)}")
    print(f"padding fraction (micro {a.micro}): packed={pad_packed:.4f} padded-length-grouped (the fallback)="
          f"{pad_grouped:.4f} padded-random-order={pad_random:.4f}")

    cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048)
    varlen = register_varlen_attention()
    cfg._attn_implementation = varlen  # packed rows: per-example attention (flash-attn varlen on GPU)
    packed_model = LlamaForCausalLM(cfg)
    padded_cfg = copy.deepcopy(cfg)
    padded_cfg._attn_implementation = "sdpa"  # the fallback's attention
    padded_model = LlamaForCausalLM(padded_cfg)
    padded_model.load_state_dict(packed_model.state_dict())  # the same weights
    models = {"packed": packed_model, "padded": padded_model}
    opts = {}
    for k, m in models.items():
        m.config.use_cache = False
        m.train()
        opts[k] = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.0)
    collate = {"packed": PackedCollator(flash_attn_kwargs=True), "padded": PaddedCollator(pad_token_id=0)}
    rng = random.Random(1)
    timed = rng.sample(batches[1:], a.steps)  # batches[0] holds the longest example (the sampler's OOM probe)

    def feats_of(batch: list[int]) -> list[dict]:
        feats = []
        for i in batch:
            n = lengths[i]
            ids = [rng.randrange(1, 8192) for _ in range(n)]
            cut = n // 3
            feats.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
        return feats

    def step(mode: str, feats: list[dict]) -> float:
        b = collate[mode](feats)
        t0 = time.perf_counter()
        loss = models[mode](**b).loss
        loss.backward()
        opts[mode].step()
        opts[mode].zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    warm = feats_of(batches[1])
    step("packed", warm)
    step("padded", warm)
    t = {"packed": 0.0, "padded": 0.0}
    real = processed_padded = 0
    for i, batch in enumerate(timed):
        feats = feats_of(batch)
        lens = [len(f["input_ids"]) for f in feats]
        real += sum(lens)
        processed_padded += max(lens) * len(lens)
        for mode in (("packed", "padded") if i % 2 == 0 else ("padded", "packed")):
            t[mode] += step(mode, feats)
        print(f"step {i + 1}/{a.steps}: lengths {min(lens)}-{max(lens)}; packed {t['packed']:.1f}s "
              f"padded {t['padded']:.1f}s", flush=True)
    tps_packed, tps_padded = real / t["packed"], real / t["padded"]
    speedup = tps_packed / tps_padded
    timed_pad = 1 - real / processed_padded
    print(f"real tokens/s: packed={tps_packed:.0f} length-grouped padded={tps_padded:.0f} (same {real} tokens, "
          f"same examples, {a.steps} steps; padding of the timed padded batches {timed_pad:.4f})")
    print(f"RESULT speedup_vs_grouped={speedup:.2f} padding={pad_packed:.4f} grouped_padding={pad_grouped:.4f} "
          f"timed_grouped_padding={timed_pad:.4f} random_padding={pad_random:.4f}")


if __name__ == "__main__":
    main()
