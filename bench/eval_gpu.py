"""GPU check of evaluation generation with the transformers backend (the embedded default):
greedy batched generation of GSM8K prompts (the shared SFT/eval prompt) on one GPU; prints
generated tokens/s at batch B against batch 1 measured in the same run.

    PYTHONPATH=src python bench/eval_gpu.py --model DIR [--n 256] [--batch 64] [--max-new-tokens 256]

DIR may be a config-only directory (config.json + tokenizer, no weights): the bench then builds
the same architecture with random weights (throughput is the same; answers are meaningless).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def materialize(model_dir: str) -> str:
    """A loadable model dir: the given one, or a random-init copy of a config-only dir."""
    d = Path(model_dir)
    if not d.is_dir() or any(d.glob("*.safetensors")) or any(d.glob("*.bin")):
        return model_dir
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(tempfile.mkdtemp(prefix="skymath-random-"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d)).save_pretrained(out)
    AutoTokenizer.from_pretrained(d).save_pretrained(out)
    return str(out)


def main() -> None:
    import torch

    from skymath.evaluate.backends.hf import HFBackend
    from skymath.prompts import sft_prompt

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="../shared/data/gsm8k_test.jsonl")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible")
    rows = [json.loads(ln) for ln in Path(a.data).read_text().splitlines()[: a.n]]
    prompts = [sft_prompt(r["question"]) for r in rows]
    path = materialize(a.model)
    results = {}
    for bs, items in ((1, prompts[:8]), (a.batch, prompts)):
        be = HFBackend(path, batch_size=bs, stop=())
        be.generate(items[:2], 8)  # warm-up (CUDA context, kernels)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        gens = be.generate(items, a.max_new_tokens)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        toks = sum(g.completion_tokens for g in gens)
        results[bs] = toks / dt
        print(f"batch={bs:4d} items={len(items)} tokens={toks} seconds={dt:.1f} tokens/s={toks / dt:.0f} "
              f"peak_mem={torch.cuda.max_memory_allocated() / 2**30:.2f}GiB", flush=True)
        be.close()
        del be
        torch.cuda.empty_cache()
    print(f"device={torch.cuda.get_device_name()} dtype=bf16 model={a.model}")
    print(f"RESULT tokens_per_s={results[a.batch]:.0f} batch1_tokens_per_s={results[1]:.0f} "
          f"batch_speedup={results[a.batch] / results[1]:.1f}")


if __name__ == "__main__":
    main()
