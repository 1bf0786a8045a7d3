"""Padding waste and CPU training throughput: padding-free packing vs padded micro-batches.

Lengths follow the recipe's shape (most samples a few hundred tokens, ~6% over 512, a thin tail
to 2048). Same model, same examples, same micro-batch size; steps alternate between the two
modes so machine-speed drift hits both. Reports the padding fraction of processed tokens
(packed, padded in random order, padded with length grouping) and real tokens/s.

    PYTHONPATH=src python bench/sft_packing.py [--steps 6] [--micro 8]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from skymath.train.packing import (
        PackedCollator,
        PaddedCollator,
        length_grouped_order,
        padding_fraction,
        register_varlen_attention,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    lengths = recipe_lengths(20000)
    over512 = sum(n > 512 for n in lengths) / len(lengths)
    pad_packed = padding_fraction(lengths, a.micro, packing=True)
    pad_random = padding_fraction(lengths, a.micro, packing=False)
    grouped = [lengths[i] for i in length_grouped_order(lengths, a.micro)]
    pad_grouped = padding_fraction(grouped, a.micro, packing=False)
    print(f"lengths: n={len(lengths)} median={sorted(lengths)[len(lengths) // 2]} >512={over512:.1%} max={max(lengths)}")
    print(f"padding fraction (micro {a.micro}): packed={pad_packed:.4f} padded-random={pad_random:.4f} "
          f"padded-length-grouped={pad_grouped:.4f}")

    cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048)
    # packed rows: per-example attention (what flash-attn varlen does on GPU); padded: plain SDPA
    cfg._attn_implementation = register_varlen_attention()
    model = LlamaForCausalLM(cfg)
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    rng = random.Random(1)
    packed_c, padded_c = PackedCollator(flash_attn_kwargs=True), PaddedCollator(pad_token_id=0)

    def batch_feats() -> list[dict]:
        feats = []
        for n in rng.sample(lengths, a.micro):
            ids = [rng.randrange(1, 8192) for _ in range(n)]
            cut = n // 3
            feats.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
        return feats

    def step(batch: dict) -> None:
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(packed_c(batch_feats()))  # warm-up
    t = {"packed": 0.0, "padded": 0.0}
    real = 0
    for i in range(a.steps):
        feats = batch_feats()
        real += sum(len(f["input_ids"]) for f in feats)
        for mode in (("packed", "padded") if i % 2 == 0 else ("padded", "packed")):
            b = (packed_c if mode == "packed" else padded_c)(feats)
            t0 = time.perf_counter()
            step(b)
            t[mode] += time.perf_counter() - t0
        print(f"step {i + 1}/{a.steps}: packed {t['packed']:.1f}s padded {t['padded']:.1f}s", flush=True)
    tps_packed, tps_padded = real / t["packed"], real / t["padded"]
    speedup = tps_packed / tps_padded
    print(f"real tokens/s: packed={tps_packed:.0f} padded={tps_padded:.0f} (same {real} tokens, {a.steps} steps)")
    print(f"RESULT padding={pad_packed:.4f} speedup={speedup:.2f} padded_padding={pad_random:.4f} "
          f"grouped_padding={pad_grouped:.4f}")


if __name__ == "__main__":
    main()
