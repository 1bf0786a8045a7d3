"""Stage `eval`: zero-shot CoT evaluation of one model on GSM8K / MATH (and distractor sets).

Shard i of n takes a contiguous slice of the benchmark items (fixed global order), generates
greedily with the configured backend, extracts strict + lenient answers, grades them, and writes
result Records. When the last shard finishes, `after_shard_done` merges every shard (in item
order) into `results.jsonl` + `metrics.json` — no separate merge job that could be stranded,
and the merge is identical to an unsharded run's output.
"""

from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import Field

from skymath.errors import UserError
from skymath.evaluate.benchmarks import BenchmarkSpec
from skymath.stages import StageParams

KIND = "eval"
SHAPE = "gpu-array"
RESULTS = "results.jsonl"
METRICS = "metrics.json"


def _default_benchmarks() -> list[BenchmarkSpec]:
    return [BenchmarkSpec(name="gsm8k"), BenchmarkSpec(name="math")]


class Params(StageParams):
    model: str  # tiny:smollm2 | a path | a hub name | stage:<sft stage> | an API model (backend openai)
    label: str | None = None  # the model's name in reports (default: the stage name)
    backend: Literal["hf", "vllm", "openai"] = "hf"
    prompt_style: Literal["alpaca", "chat"] = "alpaca"
    benchmarks: list[BenchmarkSpec] = Field(default_factory=_default_benchmarks)
    distractors_from: str | None = None  # a `distractors` stage: also evaluate its GSM8K variants
    max_new_tokens: int = Field(2048, ge=1)
    batch_size: int = Field(16, ge=1)  # hf backend; vllm schedules the whole shard itself
    chunk: int = Field(256, ge=1)  # items generated + graded + written per step (resume granularity)
    tensor_parallel_size: int = Field(1, ge=1)  # vllm
    dtype: str = "auto"
    seed: int = 0
    grade_timeout_s: float = Field(1.0, gt=0, le=1.0)
    grade_processes: int | None = Field(None, ge=1)  # default: the CPUs of this shard (resources.cpus)
    threads: int | None = Field(None, ge=1)  # hf on CPU: torch threads (default: resources.cpus)
    sft_samples: int | None = Field(None, ge=0)  # SFT samples behind this model (scaling curve); default: derived


def _ancestors(cfg, name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(cfg.stages[name].depends_on)
    while todo:
        d = todo.pop()
        if d in seen or d not in cfg.stages:
            continue
        seen.add(d)
        todo.extend(cfg.stages[d].depends_on)
    return seen


def check_config(cfg, name: str, source: str) -> None:
    p: Params = cfg.stages[name].params
    up = _ancestors(cfg, name)
    if p.model.startswith("stage:"):
        dep = p.model.split(":", 1)[1]
        if dep not in cfg.stages:
            raise UserError(f"{source}: stages.{name}.params.model: no stage {dep!r} in this pipeline")
        if dep not in up:
            raise UserError(f"{source}: stages.{name}.params.model: {p.model} needs `depends_on: [{dep}]`")
    if p.distractors_from is not None:
        d = p.distractors_from
        if d not in cfg.stages or cfg.stages[d].kind != "distractors":
            raise UserError(f"{source}: stages.{name}.params.distractors_from: {d!r} is not a distractors stage")
        if d not in up:
            raise UserError(f"{source}: stages.{name}.params.distractors_from: {d!r} must be in depends_on")
    if p.backend == "openai" and p.prompt_style == "alpaca" and p.model.startswith("stage:"):
        raise UserError(f"{source}: stages.{name}.params.backend: a trained stage model is evaluated with hf or vllm")
    names = [b.name for b in p.benchmarks]
    if len(set(names)) != len(names):
        raise UserError(f"{source}: stages.{name}.params.benchmarks: duplicate benchmark names {names}")


def stage_items(ctx) -> list[dict]:
    """Every item of the stage, in the global order shards slice (benchmarks, then distractor sets)."""
    from skymath.evaluate.benchmarks import load_items
    from skymath.evaluate.robustness import distractor_items

    p: Params = ctx.params
    extra = distractor_items(ctx.iter_inputs(p.distractors_from)) if p.distractors_from else []
    return load_items(p.benchmarks, ctx.config.data.root, extra)


def _backend_options(ctx, p: Params, progress) -> dict:
    if p.backend == "hf":
        return {"batch_size": p.batch_size, "dtype": p.dtype, "progress": progress,
                "threads": p.threads or ctx.spec.resources.cpus}
    if p.backend == "vllm":
        return {"tensor_parallel_size": p.tensor_parallel_size, "dtype": p.dtype, "seed": p.seed}
    return {"llm": ctx.config.llm, "cache_dir": ctx.work_dir, "ctx": ctx}


def run(ctx) -> dict:
    from skymath.evaluate.backends import load_backend
    from skymath.evaluate.grade_pool import GradePool
    from skymath.evaluate.runner import available_cpus, evaluate_items
    from skymath.models import resolve_model

    p: Params = ctx.params
    mine = ctx.my_slice(stage_items(ctx))
    writer = ctx.writer(".jsonl", resume=True)
    todo = [it for it in mine if it["id"] not in writer]
    info: dict = {"items": len(mine), "resumed": len(mine) - len(todo), "backend": p.backend}
    if not todo:
        return info
    model = p.model if p.backend == "openai" else resolve_model(p.model, run_root=ctx.run.root)
    # grader processes import sympy in the background while the model loads and generates
    cpus = min(available_cpus(), ctx.spec.resources.cpus)
    pool = GradePool(p.grade_processes or min(cpus, max(1, len(todo) // 32))).start()
    bar = ctx.progress(total=len(todo), desc=f"{ctx.stage_name}[{ctx.shard}] generate", unit="item")
    t0 = time.time()
    try:
        backend = load_backend(p.backend, model, **_backend_options(ctx, p, bar))
    except BaseException:
        pool.close()
        bar.close()
        raise
    info["load_s"] = round(time.time() - t0, 2)
    t1 = time.time()
    try:
        recs = evaluate_items(todo, backend, style=p.prompt_style, max_new_tokens=p.max_new_tokens,
                              stage=ctx.stage_name, model=p.model, chunk=p.chunk, pool=pool,
                              grade_timeout=p.grade_timeout_s, write=writer.write, stop=ctx.stop_requested)
        if p.backend != "hf":
            bar.update(len(recs))
        if p.backend == "openai":
            info["usage"] = backend.usage()
    finally:
        pool.close()
        bar.close()
        backend.close()
    info["generate_s"] = round(time.time() - t1, 2)
    info["prompt_tokens"] = sum(r.meta["prompt_tokens"] for r in recs)
    info["completion_tokens"] = sum(r.meta["completion_tokens"] for r in recs)
    ctx.report_progress(tokens_in=info["prompt_tokens"], tokens_out=info["completion_tokens"], usage=info.get("usage"))
    return info


def merge(run, cfg, stage: str) -> dict | None:
    """Merge finished shards into results.jsonl + metrics.json; None while shards are missing."""
    from skymath.evaluate.metrics import compute_metrics, result_row
    from skymath.records import atomic_write_text, read_jsonl, write_jsonl

    spec = cfg.stages[stage]
    if not run.stage_complete(stage, spec.num_shards):
        return None
    rows = []
    for path in run.output_files(stage, spec.num_shards):
        rows.extend(read_jsonl(path))
    rows.sort(key=lambda r: r["meta"]["index"])
    d = run.stage_dir(stage)
    write_jsonl(d / RESULTS, rows)
    p: Params = spec.params
    metrics = compute_metrics([result_row(r) for r in rows])
    metrics.update({"stage": stage, "label": p.label or stage, "model": p.model, "backend": p.backend,
                    "prompt_style": p.prompt_style, "max_new_tokens": p.max_new_tokens,
                    "sft_samples": p.sft_samples if p.sft_samples is not None else sft_samples(run, cfg, p.model)})
    atomic_write_text(d / METRICS, json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics


def sft_samples(run, cfg, model: str) -> int:
    """Training samples behind a model: records of the non-training inputs of its SFT stage chain."""
    if not model.startswith("stage:"):
        return 0
    name = model.split(":", 1)[1]
    total, seen, todo = 0, set(), [name]
    while todo:
        s = todo.pop()
        if s in seen or s not in cfg.stages:
            continue
        seen.add(s)
        for dep in cfg.stages[s].depends_on:
            if cfg.stages[dep].kind == cfg.stages[name].kind:
                todo.append(dep)
                continue
            for i in range(cfg.stages[dep].num_shards):
                m = run.read_marker(run.done_path(dep, i)) or {}
                total += int(m.get("records", 0) or 0)
    return total


def after_shard_done(ctx) -> None:
    merge(ctx.run, ctx.config, ctx.stage_name)
