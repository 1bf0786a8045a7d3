"""GPU check of evaluation generation with the transformers backend (the embedded default):
greedy batched generation of GSM8K prompts (the shared SFT/eval prompt) on one GPU; prints
generated tokens/s at each batch size, every one on the SAME `--n` prompts (equal work: batch 1
no longer gets 8 prompts while batch 64 gets 256), against batch 1 measured in the same run.

    PYTHONPATH=src python bench/eval_gpu.py --model DIR [--n 64] [--batches 1,16,64] [--max-new-tokens 128]

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
    ap.add_argument("--n", type=int, default=64, help="prompts, the same for every batch size")
    ap.add_argument("--batches", default="1,16,64", help="batch sizes (comma-separated; 1 is always included)")
    ap.add_argument("--batch", type=int, default=None, help="(old flag) one batch size besides 1")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cpu-smoke", action="store_true", help="run on the CPU (checks the script, not the GPU)")
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not a.cpu_smoke:
        raise SystemExit("no CUDA GPU visible")
    sizes = sorted({1, *(int(x) for x in a.batches.split(",") if x.strip())} | ({a.batch} if a.batch else set()))
    rows = [json.loads(ln) for ln in Path(a.data).read_text().splitlines()[: a.n]]
    prompts = [sft_prompt(r["question"]) for r in rows]
    if len(prompts) < a.n:
        raise SystemExit(f"{a.data}: only {len(prompts)} prompts, --n {a.n} asked")
    path = materialize(a.model)
    results: dict[int, float] = {}
    outputs: dict[int, list[str]] = {}
    for bs in sizes:
        be = HFBackend(path, batch_size=bs, stop=())
        be.generate(prompts[:2], 8)  # warm-up (CUDA context, kernels)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        gens = be.generate(prompts, a.max_new_tokens)  # every batch size: the same prompts
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        toks = sum(g.completion_tokens for g in gens)
        results[bs] = toks / dt
        outputs[bs] = [g.text for g in gens]
        print(f"batch={bs:4d} prompts={len(prompts)} tokens={toks} seconds={dt:.1f} tokens/s={toks / dt:.1f} "
              f"peak_mem={(torch.cuda.max_memory_allocated() if cuda else 0) / 2**30:.2f}GiB", flush=True)
        be.close()
        del be
        if cuda:
            torch.cuda.empty_cache()
    top = sizes[-1]
    same = sum(x == y for x, y in zip(outputs[1], outputs[top], strict=True)) / len(prompts)
    print(f"device={torch.cuda.get_device_name() if cuda else 'cpu'} model={a.model}; greedy outputs identical at batch 1 "
          f"and {top}: {same:.0%} of prompts (padding can flip near-ties in bf16)")
    per = " ".join(f"tokens_per_s_b{bs}={results[bs]:.1f}" for bs in sizes)
    print(f"RESULT tokens_per_s={results[top]:.1f} batch1_tokens_per_s={results[1]:.1f} "
          f"batch_speedup={results[top] / results[1]:.1f} prompts_per_batch_size={len(prompts)} {per}")


if __name__ == "__main__":
    main()
