"""Stage `distractors`: GSM8K test problems with 1-5 irrelevant sentences inserted (CMATH method),
generated through the synthesis client (limits, retries, cache, cost accounting) and stored with
their distractor count, for the robustness curve of the `eval` stage (`distractors_from`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from skymath.stages import StageParams

KIND = "distractors"
SHAPE = "cpu-array"
COOPERATIVE_STOP = True


class Params(StageParams):
    source: str = "gsm8k_test"  # GSM8K-format file in data.root, a path, or hf:openai/gsm8k:main
    limit: int | None = Field(None, ge=1)  # how many GSM8K problems (None: all 1,319)
    sample: Literal["first", "spread"] = "spread"
    counts: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    temperature: float | None = Field(None, ge=0)  # default: llm.temperature
    max_tokens: int = Field(1024, ge=1)
    failure_tolerance: float | None = Field(None, ge=0, le=1)  # default: llm.failure_tolerance

    @field_validator("counts")
    @classmethod
    def _counts(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= c <= 5 for c in v) or len(set(v)) != len(v):
            raise ValueError("counts: distinct numbers of distractors between 1 and 5")
        return sorted(v)


def run(ctx) -> dict:
    import json

    from skymath.evaluate.benchmarks import BenchmarkSpec, load_benchmark
    from skymath.evaluate.robustness import (
        check_rewrite,
        distractor_messages,
        distractor_record,
        parse_rewrite,
    )
    from skymath.synth.client import ChatRequest, LLMClient

    p: Params = ctx.params
    spec = BenchmarkSpec(name="gsm8k", source=p.source, kind="gsm8k", limit=p.limit, sample=p.sample)
    items = ctx.my_slice(load_benchmark(spec, ctx.config.data.root))
    writer = ctx.writer(".jsonl", resume=True)
    wanted = [(it, k) for it in items for k in p.counts if f"{it['id']}#d{k}" not in writer]
    info: dict = {"problems": len(items), "wanted": len(items) * len(p.counts)}
    if not wanted:
        return info
    bad = ctx.output_path(".rejected.jsonl")
    tried: dict[str, int] = {}  # a rejected rewrite is retried as a new sample (the cache would repeat it)
    if bad.exists():
        for line in bad.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            tried[row["id"]] = int(row.get("attempt", 0)) + 1
    client = LLMClient.for_context(ctx, cache_dir=ctx.work_dir)
    reqs = [ChatRequest(key=f"{it['id']}#d{k}", messages=distractor_messages(it["problem"], k),
                        temperature=p.temperature, max_tokens=p.max_tokens,
                        sample_index=tried.get(f"{it['id']}#d{k}", 0)) for it, k in wanted]
    bar = ctx.progress(total=len(reqs), desc=f"{ctx.stage_name}[{ctx.shard}]", unit="req")
    try:
        results = client.run_batch(reqs, progress=lambda _r: bar.update(1))
    finally:
        bar.close()
    rejected = []
    for (it, k), req, res in zip(wanted, reqs, results, strict=True):
        if not res.ok:
            rejected.append({"id": res.key, "attempt": req.sample_index, "reason": f"request failed: {res.error}"})
            continue
        text = parse_rewrite(res.text)
        why = check_rewrite(it["problem"], text)
        if why:
            rejected.append({"id": res.key, "attempt": req.sample_index, "reason": why, "text": text[:2000]})
            continue
        writer.write(distractor_record(it, k, text, ctx.stage_name))
    if rejected or bad.exists():
        bad.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected), encoding="utf-8")
    info["rejected"] = len(rejected)
    info["usage"] = client.usage_totals()
    client.close()
    tol = p.failure_tolerance if p.failure_tolerance is not None else ctx.config.llm.failure_tolerance
    if len(rejected) > tol * len(wanted):
        raise RuntimeError(f"{len(rejected)} of {len(wanted)} distractor rewrites failed or were rejected "
                           f"(tolerance {tol:.0%}); see {ctx.output_path('.rejected.jsonl').name}. "
                           "Rerunning the shard keeps what was written and retries only the rest")
    return info
