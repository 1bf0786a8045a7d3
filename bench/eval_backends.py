"""Bench: the same evaluation prompts through the `hf` backend (batched `generate`) and the `vllm`
backend (continuous batching), greedy, through the very backends the `eval` stage loads.

Fair by construction: the same N GSM8K prompts (the shared SFT/eval prompt), the same
max_new_tokens and stop string, the same dtype on both sides (float32 on CPU, bfloat16 on a
GPU), every core for both (hf: torch threads = CPUs; vLLM CPU: its OpenMP threads), one short
warm-up call each, and only the generation call timed (model load reported apart). Throughput
is generated tokens / generation seconds, each side's own token count. Also reported: how many
greedy answers are identical (the same numbers in, the same kernels or not).

    .venv/bin/python bench/eval_backends.py [--n 32] [--max-new-tokens 64] [--batch-size 16]
    # GPU (bench/gpu_check.sh): python bench/eval_backends.py --device cuda --model .gpu/smollm2-config

Ends with `RESULT vllm_vs_hf=<vllm tok/s / hf tok/s> hf_tokens_per_s=... vllm_tokens_per_s=...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def prompts_from(data: Path, n: int) -> list[str]:
    from skymath.prompts import sft_prompt

    rows = [json.loads(ln) for ln in data.read_text(encoding="utf-8").splitlines()[:n]]
    if len(rows) < n:
        raise SystemExit(f"{data}: only {len(rows)} prompts, --n {n} asked")
    return [sft_prompt(r.get("question") or r["problem"]) for r in rows]


def release_gpu_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_backend(name: str, model: str, prompts: list[str], max_new: int, **options) -> dict:
    from skymath.evaluate.backends import load_backend

    t0 = time.perf_counter()
    backend = load_backend(name, model, **options)
    load_s = time.perf_counter() - t0
    try:
        backend.generate(prompts[:2], 8)  # warm-up: first-call allocations on both sides
        t0 = time.perf_counter()
        gens = backend.generate(prompts, max_new)
        gen_s = time.perf_counter() - t0
    finally:
        backend.close()
        release_gpu_memory()  # the next backend (vLLM) sizes its KV cache from the free GPU memory
    failed = [g.error for g in gens if g.error]
    if failed:
        raise SystemExit(f"{name}: {len(failed)} generations failed: {failed[0]}")
    tokens = sum(g.completion_tokens for g in gens)
    out = {"load_s": round(load_s, 1), "gen_s": round(gen_s, 2), "tokens": tokens,
           "tokens_per_s": round(tokens / gen_s, 1), "texts": [g.text for g in gens]}
    print(f"{name:5s} load {out['load_s']:6.1f} s  generate {out['gen_s']:7.2f} s  {tokens:6d} tokens  "
          f"{out['tokens_per_s']:8.1f} tokens/s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny:smollm2", help="tiny:smollm2, an HF dir, or a config-only dir (GPU)")
    ap.add_argument("--data", default=None, help="GSM8K jsonl (default: gsm8k_test of the data root)")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16, help="hf backend batch (the eval stage's default)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", default=None, help="both backends (default: float32 on cpu, bfloat16 on cuda)")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from skymath.models import resolve_model
    from skymath.paths import default_data_root

    model = resolve_model(a.model)
    if a.device == "cuda":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from eval_gpu import materialize  # a config-only dir -> random weights of that architecture

        model = materialize(model)
    dtype = a.dtype or ("bfloat16" if a.device == "cuda" else "float32")
    prompts = prompts_from(Path(a.data) if a.data else default_data_root() / "gsm8k_test.jsonl", a.n)
    cpus = len(os.sched_getaffinity(0))
    print(f"{a.n} GSM8K prompts, {a.max_new_tokens} new tokens max, greedy, {dtype}, {a.device}, {cpus} CPUs",
          flush=True)
    hf = run_backend("hf", model, prompts, a.max_new_tokens, batch_size=a.batch_size, dtype=dtype,
                     device=a.device, threads=cpus if a.device == "cpu" else None, max_length=2048)
    vl = run_backend("vllm", model, prompts, a.max_new_tokens, dtype=dtype, max_model_len=2048,
                     gpu_memory_utilization=0.8)
    same = sum(x == y for x, y in zip(hf["texts"], vl["texts"], strict=True))
    ratio = vl["tokens_per_s"] / hf["tokens_per_s"]
    print(f"identical greedy answers: {same}/{a.n}")
    print(f"RESULT vllm_vs_hf={ratio:.2f} hf_tokens_per_s={hf['tokens_per_s']} vllm_tokens_per_s={vl['tokens_per_s']} "
          f"identical={same}/{a.n} hf_load_s={hf['load_s']} vllm_load_s={vl['load_s']} device={a.device} dtype={dtype}")


if __name__ == "__main__":  # the vllm backend's engine processes are spawned: guard the entry point
    main()
