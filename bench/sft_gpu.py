"""GPU checks of SFT. Two modes:

1. `--stage` (what bench/gpu_check.sh runs): THE `sft` stage, through the real worker under
   torchrun, DeepSpeed ZeRO-2, bf16, on a ~0.5B Llama-architecture model (random init, the SmolLM2
   tokenizer), after a real `tokenize` stage, for N steps -- once packed (flash-attn varlen when
   installed, else the per-example SDPA fallback) and once padded (length-grouped). Prints the
   steady-state tokens/s and MFU the stage logged, and packed/padded:

       PYTHONPATH=src python bench/sft_gpu.py --stage --tokenizer .gpu/tokenizer [--steps 60]
       PYTHONPATH=src python bench/sft_gpu.py --stage --device cpu --size tiny --steps 4   # CPU plumbing run

2. `--model DIR`: the hot loop alone (no Trainer): packed vs padded micro-batches of any HF model.

Lengths follow the recipe's shape (median ~280 tokens, ~7% over 512, 1% tail to 2048).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# a ~0.5B Llama-architecture model with the SmolLM2 tokenizer (49,152 tokens): 24 x 1280, GQA 20/5
SIZES = {
    "0.5b": {"hidden_size": 1280, "intermediate_size": 3584, "num_hidden_layers": 24, "num_attention_heads": 20,
             "num_key_value_heads": 5},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2},
}


def recipe_lengths(n: int, seed: int = 0, cap: int = 2048) -> list[int]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = rng.randint(1024, 2048) if rng.random() < 0.01 else int(rng.lognormvariate(math.log(280), 0.4))
        out.append(min(cap, max(48, x)))
    return out


def peak_tflops(name: str, override: float | None) -> float | None:
    from skymath.train.throughput import peak_tflops as table

    return table(name, override)


def run_mode(model, opt, batches, collate, steps: int, warmup: int, n_params: int, cfg, device: str) -> dict:
    import contextlib

    import torch

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tokens = attn_sq = 0
    t0 = None
    for i in range(steps + warmup):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        feats = batches[i % len(batches)]
        batch = {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in collate(feats).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            lens = [len(f["input_ids"]) for f in feats]
            tokens += sum(lens)
            attn_sq += sum(n * n for n in lens)
    sync()
    dt = time.perf_counter() - t0
    # 6 N per token (fwd+bwd matmuls) + causal attention 6 * layers * hidden * n^2 (QK^T and AV, fwd+bwd, /2 causal)
    flops = 6 * n_params * tokens + 6 * cfg.num_hidden_layers * cfg.hidden_size * attn_sq
    return {"tokens_per_s": tokens / dt, "flops_per_s": flops / dt, "seconds": dt,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"), "final_loss": float(loss)}


# ---- --stage: the real tokenize + sft stages ---------------------------------------------------
def build_model(size: str, tokenizer_dir: Path, out: Path) -> Path:
    """A random-init Llama of the given size saved with the tokenizer (nothing is downloaded)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      **SIZES[size])
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def synthetic_records(tokenizer_dir: Path, n: int, seed: int = 0) -> list:
    """Records whose prompt + response lengths follow recipe_lengths (random vocabulary text)."""
    from transformers import AutoTokenizer

    from skymath.records import Record

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = random.Random(seed)
    words = [w for w in (tok.decode([i]).strip() for i in range(200, min(len(tok), 20000))) if w.isalpha()]
    out = []
    for i, n_tok in enumerate(recipe_lengths(n, seed)):
        prob = " ".join(rng.choice(words) for _ in range(max(8, n_tok // 6)))
        resp = " ".join(rng.choice(words) for _ in range(max(8, n_tok - n_tok // 6)))
        out.append(Record(id=f"bench-{i}", problem=prob + "?", response=f"{resp}\nThe answer is {i % 97}"))
    return out


def stage_run(root: Path, name: str, model: Path, records: list, sft: dict) -> Path:
    """A run dir: a finished stand-in data stage, a tokenize stage and an sft stage."""
    from skymath.config import config_from_dict, dump_config
    from skymath.pipeline.rundir import RunDir
    from skymath.records import write_jsonl

    stages = {"data": {"kind": "seeds", "params": {"sources": ["math_train"]}},
              "tok": {"kind": "tokenize", "depends_on": ["data"], "resources": {"cpus": os.cpu_count() or 1}},
              "sft": {"kind": "sft", "depends_on": ["tok"], "params": {"model": str(model), **sft}}}
    cfg = config_from_dict({"run": {"name": name, "root": str(root)}, "stages": stages}, "<bench>")
    run = RunDir(root / name)
    run.freeze_config(dump_config(cfg))
    write_jsonl(run.shard_path("data", 0), records)
    run.mark_done("data", 0, {"records": len(records)})
    return run.root


def run_sft_stage(run_root: Path, timeout: float) -> dict:
    """tokenize in this process, then the sft worker under torchrun (1 process), as on a GPU node."""
    import subprocess

    from skymath.pipeline.rundir import RunDir
    from skymath.worker import run_shard

    assert run_shard(run_root, "tok", 0) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "skymath.worker", str(run_root), "sft", "0"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in r.stderr.splitlines() if "[skymath]" in ln or "Error" in ln or "error" in ln]
    print("\n".join(lines[-12:]), flush=True)
    if r.returncode != 0:
        print(r.stderr[-4000:], flush=True)
        raise SystemExit(f"sft stage failed (exit {r.returncode})")
    run = RunDir(run_root)
    marker = json.loads(run.done_path("sft", 0).read_text())
    hist = json.loads((run.work_dir("sft", 0) / "log_history.json").read_text())["log_history"]
    steady = [h for h in hist if "tokens_per_s" in h][1:]  # the first interval holds the warm-up
    steady = steady[len(steady) // 2:] or steady  # the second half: kernels compiled, caches warm
    tps = sum(h["tokens_per_s"] for h in steady) / len(steady) if steady else marker["tokens_per_s"]
    mfus = [h["mfu"] for h in steady if "mfu" in h]
    return {"tokens_per_s": tps, "mfu": sum(mfus) / len(mfus) if mfus else None, "wall_s": time.time() - t0,
            "marker": marker}


def stage_main(a: argparse.Namespace) -> None:
    import importlib.util
    import tempfile

    import torch

    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible (use --device cpu for a plumbing run)")
    if not cuda:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    tok_dir = Path(a.tokenizer) if a.tokenizer else None
    if tok_dir is None:
        from skymath.models import tiny_model_dir

        tok_dir = tiny_model_dir()
    work = Path(a.work or tempfile.mkdtemp(prefix="skymath-gpu-check-"))
    model = build_model(a.size, tok_dir, work / f"model-{a.size}")
    records = synthetic_records(tok_dir, a.samples)
    has_fa = cuda and importlib.util.find_spec("flash_attn") is not None
    packed_attn = "flash_attention_2" if has_fa else "sdpa_varlen"
    common = {"deepspeed": "zero2" if not a.no_deepspeed else None, "max_steps": a.steps, "global_batch_size": a.micro,
              "micro_batch_size": a.micro, "max_length": 2048, "lr": 2e-5, "logging_steps": max(1, a.steps // 10),
              "save_steps": 10 * a.steps, "val_samples": 0, "gradient_checkpointing": cuda, "bf16": cuda,
              "warmup_ratio": 0.0}
    results = {}
    for mode, extra in (("packed", {"packing": True, "attn_implementation": packed_attn}),
                        ("padded", {"packing": False, "group_by_length": True})):
        root = stage_run(work / "runs", f"{mode}-{a.size}-{a.steps}", model, records, {**common, **extra})
        results[mode] = r = run_sft_stage(root, a.timeout)
        m = r["marker"]
        print(f"{mode:6s} tokens/s={r['tokens_per_s']:.0f} mfu={r['mfu']} steps={m['steps']} "
              f"params={m['params'] / 1e6:.0f}M device={m['device']} wall={r['wall_s']:.0f}s", flush=True)
    default = "packed" if (has_fa or not cuda) else "padded"  # what the sft stage picks by itself
    d = results[default]
    ratio = results["packed"]["tokens_per_s"] / results["padded"]["tokens_per_s"]
    mfu = f"{d['mfu']:.3f}" if d["mfu"] is not None else "n/a"
    print(f"RESULT tokens_per_s={d['tokens_per_s']:.0f} mfu={mfu} packed_vs_padded={ratio:.2f} "
          f"default={default} packed_attn={packed_attn} zero={common['deepspeed'] or 'none'} "
          f"params_m={d['marker']['params'] / 1e6:.0f} device={d['marker']['device'].replace(' ', '_')}")


def main() -> None:
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from skymath.train.packing import PackedCollator, PaddedCollator, register_varlen_attention

    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", action="store_true", help="run the real tokenize + sft stages (ZeRO-2)")
    ap.add_argument("--size", choices=sorted(SIZES), default="0.5b", help="--stage: model size (random init)")
    ap.add_argument("--tokenizer", default=None, help="--stage: tokenizer dir (default: the tiny SmolLM2 copy)")
    ap.add_argument("--samples", type=int, default=2000, help="--stage: synthetic records")
    ap.add_argument("--work", default=None, help="--stage: work dir (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=600, help="--stage: seconds per sft run")
    ap.add_argument("--no-deepspeed", action="store_true", help="--stage: plain DDP instead of ZeRO-2")
    ap.add_argument("--model", default=None, help="hot-loop mode: local HF model dir (or hub name if online)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of the GPU (auto for H100/A100/...)")
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a plumbing smoke run)")
    a = ap.parse_args()
    if a.stage:
        return stage_main(a)
    if not a.model:
        ap.error("--model DIR (hot-loop mode) or --stage")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible (use --device cpu for a plumbing smoke run)")
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    peak = peak_tflops(name, a.peak_tflops)
    cfg = AutoConfig.from_pretrained(a.model)
    mdir = Path(a.model)
    has_weights = not mdir.is_dir() or any(mdir.glob("*.safetensors")) or any(mdir.glob("*.bin"))
    print(f"model={a.model} weights={'pretrained' if has_weights else 'random-init (config only)'}", flush=True)
    vocab = cfg.vocab_size
    rng = random.Random(0)
    lengths = recipe_lengths(a.micro * 64)
    batches = []
    for i in range(0, len(lengths), a.micro):
        feats = []
        for n in lengths[i:i + a.micro]:
            ids = [rng.randrange(10, vocab) for _ in range(n)]
            feats.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
        batches.append(feats)
    has_fa = a.device == "cuda" and importlib.util.find_spec("flash_attn") is not None
    packed_attn = "flash_attention_2" if has_fa else register_varlen_attention()
    results = {}
    for mode, attn, collate in (("packed", packed_attn, PackedCollator(flash_attn_kwargs=True)),
                                ("padded", "sdpa", PaddedCollator(pad_token_id=0, pad_to_multiple_of=8))):
        torch.manual_seed(0)
        if has_weights:
            model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation=attn)
        else:  # a config-only dir (no weights travel to the GPU box): same architecture, random init
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation=attn)
        model = model.to(a.device)
        model.config.use_cache = False
        model.train()
        n_params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0, fused=a.device == "cuda")
        r = run_mode(model, opt, batches, collate, a.steps, a.warmup, n_params, cfg, a.device)
        r["mfu"] = r["flops_per_s"] / (peak * 1e12) if peak else float("nan")
        results[mode] = r
        print(f"{mode:6s} attn={attn:18s} tokens/s={r['tokens_per_s']:.0f} MFU={r['mfu']:.3f} "
              f"peak_mem={r['peak_mem_gb']:.2f}GiB steps={a.steps} {r['seconds']:.1f}s loss={r['final_loss']:.3f}",
              flush=True)
        del model, opt
        if a.device == "cuda":
            torch.cuda.empty_cache()
    speedup = results["packed"]["tokens_per_s"] / results["padded"]["tokens_per_s"]
    print(f"device={name} params={n_params / 1e6:.1f}M peak_bf16_tflops={peak}")
    print(f"RESULT packed_tokens_per_s={results['packed']['tokens_per_s']:.0f} "
          f"padded_tokens_per_s={results['padded']['tokens_per_s']:.0f} speedup={speedup:.2f} "
          f"packed_mfu={results['packed']['mfu']:.3f} padded_mfu={results['padded']['mfu']:.3f} "
          f"packed_peak_mem_gb={results['packed']['peak_mem_gb']:.2f} padded_peak_mem_gb={results['padded']['peak_mem_gb']:.2f}")


if __name__ == "__main__":
    main()
