"""Stage `verifier` (optional): an LLM judge keeps only responses it finds correct (reasoning and
final answer, against the gold answer when the record has one).

The paper found verifier filtering keeps easy problems and loses to random selection of the same
size, so the stage reports the difficulty distribution (MATH level, response length) before and
after; `summary.json` totals it over shards. Rejected and unjudgeable records (an answer without
a verdict, handled by `on_judge_error`) go to `shard-NNNNN.rejected.jsonl` with the judge's reason.
A request that failed after the client's retries is no verdict at all, neither kept nor rejected:
it is listed in `shard-NNNNN.failures.jsonl`, and a shard with more of them than
`failure_tolerance` (default 0) fails; its rerun retries only those (the rest from the cache).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from skymath.errors import UserError
from skymath.stages import StageParams

KIND = "verifier"
SHAPE = "cpu-array"


class Params(StageParams):
    prompt: str = "judge/verifier"
    use_gold: bool = True  # show the judge the record's `answer` when present
    on_judge_error: Literal["drop", "keep"] = "drop"
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(1024, ge=1)
    batch_size: int = Field(256, ge=1)
    failure_tolerance: float = Field(0.0, ge=0, le=1)  # failed requests allowed per shard (fraction)


def check_config(cfg, name: str, source: str) -> None:
    if not cfg.stages[name].depends_on:
        raise UserError(f"{source}: stages.{name}.depends_on: a verifier stage needs an input stage")


def difficulty_profile(records) -> dict:
    """Level histogram and mean response length (words): what a filter does to difficulty."""
    from skymath.decontam.ngram import words

    levels: dict[str, int] = {}
    total_words = 0
    n = 0
    for r in records:
        key = str(r.meta.get("root_level", r.level)) if r.meta.get("root_level", r.level) is not None else "none"
        levels[key] = levels.get(key, 0) + 1
        total_words += len(words(r.response))
        n += 1
    return {"count": n, "levels": dict(sorted(levels.items())), "words_sum": total_words,
            "mean_response_words": round(total_words / n, 1) if n else None}


def run(ctx) -> dict:
    from skymath.select import shard_inputs
    from skymath.select.judge import check_failures, failure_row, judge, parse_verdict, verifier_prompt
    from skymath.synth.client import LLMClient

    p: Params = ctx.params
    records = list(shard_inputs(ctx))
    client = LLMClient.for_context(ctx, cache_dir=ctx.work_dir)
    kept, rejected = ctx.writer(resume=False), ctx.writer(".rejected.jsonl", resume=False)
    kept_recs = []
    errors = 0
    failures: list[dict] = []
    try:
        with ctx.progress(total=len(records), desc=f"{ctx.stage_name}[{ctx.shard}] verify", unit="rec") as bar:
            for lo in range(0, len(records), p.batch_size):
                batch = records[lo:lo + p.batch_size]
                prompts = [(r.id, verifier_prompt(r.problem, r.response, r.answer if p.use_gold else None, p.prompt))
                           for r in batch]
                for rec, j in zip(batch, judge(client, prompts, parse_verdict, p.temperature, p.max_tokens,
                                               progress=lambda _r: bar.update(1)), strict=True):
                    if j.request_failed:  # no answer: never "incorrect" (nor "keep" by on_judge_error)
                        failures.append(failure_row(rec, j))
                        continue
                    errors += j.value is None
                    meta = {**rec.meta, "verifier": {"correct": j.value, "error": j.error}}
                    out = rec.model_copy(update={"meta": meta})
                    if j.value or (j.value is None and p.on_judge_error == "keep"):
                        kept.write(out)
                        kept_recs.append(rec)
                    else:
                        rejected.write(out if j.error is None else out.model_copy(
                            update={"meta": {**meta, "verifier": {**meta["verifier"], "answer": (j.text or "")[-2000:]}}}))
    finally:
        client.close()
    check_failures(ctx, failures, len(records), p.failure_tolerance, "verifier")
    failed_ids = {f["id"] for f in failures}
    judged = [r for r in records if r.id not in failed_ids]  # the difficulty shift of what was judged
    return {"records": kept.count, "input": len(records), "kept": kept.count, "rejected": rejected.count,
            "judge_errors": errors, "failed": len(failures),
            "before": difficulty_profile(judged), "after": difficulty_profile(kept_recs)}


def after_shard_done(ctx) -> None:
    """When the last shard finishes: `summary.json` with the before/after difficulty totals."""
    import json

    from skymath.records import atomic_write_text

    run, name, k = ctx.run, ctx.stage_name, ctx.num_shards
    if not run.stage_complete(name, k):
        return
    tot = {"input": 0, "kept": 0, "rejected": 0, "judge_errors": 0, "failed": 0}
    prof = {side: {"count": 0, "levels": {}, "words_sum": 0} for side in ("before", "after")}
    for i in range(k):
        m = run.read_marker(run.done_path(name, i)) or {}
        for key in tot:
            tot[key] += int(m.get(key, 0))
        for side in prof:
            src = m.get(side) or {}
            prof[side]["count"] += src.get("count", 0)
            prof[side]["words_sum"] += src.get("words_sum", 0)
            for lv, c in (src.get("levels") or {}).items():
                prof[side]["levels"][lv] = prof[side]["levels"].get(lv, 0) + c
    for side in prof.values():
        side["mean_response_words"] = round(side["words_sum"] / side["count"], 1) if side["count"] else None
        side["level_share"] = {lv: round(c / side["count"], 4) for lv, c in sorted(side["levels"].items())} \
            if side["count"] else {}
    atomic_write_text(ctx.stage_dir / "summary.json", json.dumps({**tot, **prof}, indent=1) + "\n")
