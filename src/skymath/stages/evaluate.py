"""Stage `eval`: zero-shot CoT evaluation of one model on GSM8K / MATH (and distractor sets).

Shard i of n takes a contiguous slice of the benchmark items (fixed global order), generates
greedily with the configured backend, grades each answer under the paper's protocol and the
symbolic grader, and writes result Records. When the last shard finishes, `after_shard_done`
merges every shard (in item order) into `results.jsonl` + `metrics.json` — no separate merge job
that could be stranded, and the merge is identical to an unsharded run's output.

A failed generation (API error, timeout, server gone, engine exception) is never graded: it goes
to `shard-N.failures.jsonl` with its reason and out of `n`. A shard with more failures than
`failure_tolerance` (default 0) gets no `.done` marker and fails with one line naming the count
and the first reason; its rerun (`skymath resubmit`) generates only the failed items again (the
graded ones are in the shard's partial output, API answers also in the response cache).
"""

from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import Field, model_validator

from skymath.errors import StageFailed, UserError
from skymath.evaluate.benchmarks import BenchmarkSpec
from skymath.stages import StageParams

KIND = "eval"
SHAPE = "gpu-array"
RESULTS = "results.jsonl"
METRICS = "metrics.json"
FAILURES = ".failures.jsonl"  # per shard: the items whose generation failed, with the reason


def _default_benchmarks() -> list[BenchmarkSpec]:
    return [BenchmarkSpec(name="gsm8k"), BenchmarkSpec(name="math")]


class Params(StageParams):
    model: str  # tiny:smollm2 | a path | a hub name | stage:<sft stage> | an API model (backend openai)
    label: str | None = None  # the model's name in reports (default: the stage name)
    backend: Literal["hf", "vllm", "openai"] = "hf"
    prompt_style: Literal["alpaca", "chat"] = "alpaca"
    benchmarks: list[BenchmarkSpec] = Field(default_factory=_default_benchmarks)
    distractors_from: str | None = None  # a `distractors` stage: also evaluate its GSM8K variants
    # the paper's "maximum length 2048" is the TOTAL length, prompt + answer (as in SFT):
    # each answer gets max_length - its prompt tokens; max_new_tokens optionally caps it further
    max_length: int | None = Field(2048, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    failure_tolerance: float = Field(0.0, ge=0, le=1)  # failed generations allowed per shard (fraction)
    batch_size: int = Field(16, ge=1)  # hf backend; vllm schedules the whole shard itself
    chunk: int = Field(256, ge=1)  # items generated + graded + written per step (resume granularity)
    tensor_parallel_size: int = Field(1, ge=1)  # vllm
    dtype: str = "auto"
    seed: int = 0
    grade_timeout_s: float = Field(1.0, gt=0, le=1.0)
    grade_processes: int | None = Field(None, ge=1)  # default: the CPUs of this shard (resources.cpus)
    threads: int | None = Field(None, ge=1)  # hf on CPU: torch threads (default: resources.cpus)
    sft_samples: int | None = Field(None, ge=0)  # SFT samples behind this model (scaling curve); default: derived

    @model_validator(mode="after")
    def _a_length_budget(self) -> Params:
        if self.max_length is None and self.max_new_tokens is None:
            raise ValueError("set max_length (total tokens, prompt + answer) or max_new_tokens")
        return self

    @property
    def answer_budget(self) -> int:
        """The most new tokens any answer may get (each backend also subtracts its prompt)."""
        return min(x for x in (self.max_length, self.max_new_tokens) if x is not None)


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
        # special tokens exactly as SFT adds them (train/data.py): the tokenizer's own (BOS) for the
        # alpaca frame, none for a chat template (the template text carries them)
        return {"batch_size": p.batch_size, "dtype": p.dtype, "progress": progress,
                "threads": p.threads or ctx.spec.resources.cpus, "max_length": p.max_length,
                "add_special_tokens": p.prompt_style == "alpaca"}
    if p.backend == "vllm":
        return {"tensor_parallel_size": p.tensor_parallel_size, "dtype": p.dtype, "seed": p.seed,
                "max_model_len": p.max_length, "add_special_tokens": p.prompt_style == "alpaca", "progress": progress}
    return {"llm": ctx.config.llm, "cache_dir": ctx.work_dir, "ctx": ctx, "max_length": p.max_length}


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(ctx) -> dict:
    from skymath.evaluate.backends import load_backend
    from skymath.evaluate.grade_pool import GradePool
    from skymath.evaluate.runner import available_cpus, evaluate_items
    from skymath.models import resolve_model
    from skymath.records import write_jsonl

    p: Params = ctx.params
    mine = ctx.my_slice(stage_items(ctx))
    writer = ctx.writer(".jsonl", resume=True)
    todo = [it for it in mine if it["id"] not in writer]
    failures_path = ctx.output_path(FAILURES)
    info: dict = {"items": len(mine), "resumed": len(mine) - len(todo), "backend": p.backend,
                  "failed": 0, "failures_file": failures_path.name}
    if not todo:
        write_jsonl(failures_path, [])
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
        recs, failures = evaluate_items(todo, backend, style=p.prompt_style, max_new_tokens=p.answer_budget,
                                        stage=ctx.stage_name, model=p.model, chunk=p.chunk, pool=pool,
                                        grade_timeout=p.grade_timeout_s, write=writer.write,
                                        stop=ctx.stop_requested)
        if p.backend == "openai":  # hf and vllm advance the bar themselves
            bar.update(len(recs) + len(failures))
            info["usage"] = _cumulative(ctx, "usage.json", backend.usage())
    finally:
        pool.close()
        bar.close()
        backend.close()
    info["generate_s"] = round(time.time() - t1, 2)
    info.update(_shard_tokens(writer))
    ctx.report_progress(tokens_in=info["prompt_tokens"], tokens_out=info["completion_tokens"], usage=info.get("usage"))
    write_jsonl(failures_path, failures)  # this attempt's truth: earlier failures were retried
    info["failed"] = len(failures)
    if failures and not ctx.stop_requested() and len(failures) > p.failure_tolerance * len(mine):
        raise StageFailed(
            f"stage {ctx.stage_name} shard {ctx.shard}: {len(failures)} of {len(mine)} generations failed "
            f"(first: {_one_line(failures[0]['error'])}); over failure_tolerance {p.failure_tolerance:g}, "
            f"nothing failed was graded; `skymath resubmit` retries only them (list: {failures_path})")
    return info


def _shard_tokens(writer) -> dict:
    """Tokens of every graded record of the shard, whichever attempt generated it."""
    writer.flush()
    out = {"prompt_tokens": 0, "completion_tokens": 0}
    with open(writer.partial, encoding="utf-8") as f:
        for line in f:
            meta = json.loads(line).get("meta") or {}
            for k in out:
                out[k] += int(meta.get(k) or 0)
    return out


def _cumulative(ctx, name: str, this_attempt: dict) -> dict:
    """API usage summed over every attempt of the shard (a rerun's retries cost money too)."""
    from skymath.records import atomic_write_text
    from skymath.synth.accounting import add_totals

    path = ctx.work_dir / name
    prev = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    total = add_totals(prev, this_attempt)
    atomic_write_text(path, json.dumps(total))
    return total


def merge(run, cfg, stage: str) -> dict | None:
    """Merge finished shards into results.jsonl + metrics.json; None while shards are missing."""
    from skymath.evaluate.metrics import compute_metrics, result_row
    from skymath.records import atomic_write_text, read_jsonl, write_jsonl

    spec = cfg.stages[stage]
    if not run.stage_complete(stage, spec.num_shards):
        return None
    rows, failures = [], []
    for path in run.output_files(stage, spec.num_shards):
        rows.extend(read_jsonl(path))
    for i in range(spec.num_shards):
        fpath = run.shard_path(stage, i, FAILURES)
        if fpath.exists():
            failures.extend(read_jsonl(fpath))
    rows.sort(key=lambda r: r["meta"]["index"])
    failures.sort(key=lambda f: f["index"])
    graded = {r["id"] for r in rows}
    twice = len(rows) - len(graded) + sum(f["id"] in graded for f in failures)
    if twice:  # every prompt counts exactly once: graded, or failed within the tolerance
        raise StageFailed(f"stage {stage}: {twice} item(s) appear twice across shard outputs and failure lists")
    d = run.stage_dir(stage)
    write_jsonl(d / RESULTS, rows)
    p: Params = spec.params
    metrics = compute_metrics([result_row(r) for r in rows], failures=failures)
    metrics.update({"stage": stage, "label": p.label or stage, "model": p.model, "backend": p.backend,
                    "prompt_style": p.prompt_style, "max_length": p.max_length, "max_new_tokens": p.max_new_tokens,
                    "failure_tolerance": p.failure_tolerance,
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
