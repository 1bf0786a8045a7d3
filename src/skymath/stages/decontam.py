"""Stage `decontam`: drop records sharing a word n-gram with benchmark test sets.

Input: the dependency stages' record shards (shard i takes its slice of the input files, or of
the records when there are fewer files than shards). Output: the kept records as the shard
output, removed ones in `shard-NNNNN.removed.jsonl` with `meta.decontam` = benchmark, test id,
rule and the matching n-gram. The n-gram index is built once and cached in `<run>/cache/decontam`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import Field

from skymath.decontam.benchmarks import BenchmarkSpec
from skymath.errors import UserError
from skymath.stages import StageParams

KIND = "decontam"
SHAPE = "cpu-array"


class Params(StageParams):
    n: int = Field(30, ge=1)
    benchmarks: list[str | BenchmarkSpec] = Field(default_factory=lambda: ["gsm8k", "math"])
    exact_problem: bool = True  # also drop samples whose problem's words equal a test problem's
    batch_size: int = Field(4096, ge=1)


def check_config(cfg, name: str, source: str) -> None:
    from skymath.decontam.benchmarks import resolve_benchmark

    spec = cfg.stages[name]
    if not spec.depends_on:
        raise UserError(f"{source}: stages.{name}.depends_on: a decontam stage needs an input stage")
    if not spec.params.benchmarks:
        raise UserError(f"{source}: stages.{name}.params.benchmarks: give at least one benchmark")
    for b in spec.params.benchmarks:
        try:
            resolve_benchmark(b)
        except UserError as e:
            raise UserError(f"{source}: stages.{name}.params.benchmarks: {e}") from None


def run(ctx) -> dict:
    from skymath.decontam.filter import Decontaminator
    from skymath.records import read_records

    p: Params = ctx.params
    dec = Decontaminator.from_benchmarks(
        p.benchmarks, p.n, Path(ctx.config.data.root), cache_dir=ctx.run.root / "cache" / "decontam",
        exact_problem=p.exact_problem, hf_cache_dir=ctx.run.root / "cache" / "datasets")
    files = ctx.input_paths()
    if len(files) >= ctx.num_shards:
        records = read_records(ctx.my_slice(files))
    else:
        records = iter(ctx.my_slice(list(read_records(files))))
    kept = ctx.writer(resume=False)
    removed = ctx.writer(".removed.jsonl", resume=False)
    by_bench: Counter[str] = Counter()
    by_rule: Counter[str] = Counter()
    seen = 0
    with ctx.progress(desc=f"{ctx.stage_name}[{ctx.shard}] decontam", unit="rec") as bar:
        for rec, m in dec.filter(records, p.batch_size):
            seen += 1
            if m is None:
                kept.write(rec)
            else:
                by_bench[m.benchmark] += 1
                by_rule[m.rule] += 1
                removed.write(rec.model_copy(update={"meta": {**rec.meta, "decontam": m.to_dict()}}))
            if seen % 1024 == 0:
                bar.update(1024)
        bar.update(seen % 1024)
    return {"records": kept.count, "input": seen, "kept": kept.count, "removed": removed.count,
            "removed_by_benchmark": dict(by_bench), "removed_by_rule": dict(by_rule), "n": p.n,
            "index_ngrams": len(dec.index)}


def after_shard_done(ctx) -> None:
    """When the last shard finishes: `summary.json` with the totals over all shards."""
    import json

    from skymath.records import atomic_write_text

    run, name, k = ctx.run, ctx.stage_name, ctx.num_shards
    if not run.stage_complete(name, k):
        return
    total: Counter[str] = Counter()
    by_bench: Counter[str] = Counter()
    for i in range(k):
        m = run.read_marker(run.done_path(name, i)) or {}
        for key in ("input", "kept", "removed"):
            total[key] += int(m.get(key, 0))
        by_bench.update(m.get("removed_by_benchmark", {}))
    summary = {**total, "removed_by_benchmark": dict(by_bench), "n": ctx.params.n}
    atomic_write_text(ctx.stage_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
