"""Stage `distractors`: GSM8K test problems with 1-5 irrelevant sentences inserted (CMATH method),
generated through the synthesis client (limits, retries, cache, cost accounting) and stored with
their distractor count, for the robustness curve of the `eval` stage (`distractors_from`).

A rewrite is kept only when it is verified not to change the answer:
- rule (always): it keeps every original sentence word for word and in order, inserts exactly the
  asked number of sentences, keeps every number and the final question, and carries no solution.
  Then the original problem is intact; what no rule can see is an inserted sentence that is
  relevant after all ("She also sells 3 more eggs"), hence
- solve (`verify: solve`, the default): the configured model solves the rewrite (chain of
  thought, greedy) and must reach the gold answer. A strong model ignores irrelevant sentences;
  when it does not reach the gold answer the sentence changed the problem, or confused the model:
  either way the variant is not a clean distractor and is quarantined.
A rejected rewrite is quarantined with its reason (`shard-NNNNN.rejected.jsonl`) and a new rewrite
is drawn, up to `max_attempts` per variant. A request that fails (after the client's retries) is
never a verdict: it goes to `shard-NNNNN.failures.jsonl`, counts against `failure_tolerance`, and
a rerun retries it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from skymath.stages import StageParams

KIND = "distractors"
SHAPE = "cpu-array"
COOPERATIVE_STOP = True

_SENT = re.compile(r"(?<=[.!?])\s+")


class Params(StageParams):
    source: str = "gsm8k_test"  # GSM8K-format file in data.root, a path, or hf:openai/gsm8k:main
    limit: int | None = Field(None, ge=1)  # how many GSM8K problems (None: all 1,319)
    sample: Literal["first", "spread"] = "spread"
    counts: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    temperature: float | None = Field(None, ge=0)  # default: llm.temperature
    max_tokens: int = Field(1024, ge=1)
    failure_tolerance: float | None = Field(None, ge=0, le=1)  # default: llm.failure_tolerance
    verify: Literal["solve", "rule"] = "solve"  # solve: the model must still reach the gold answer
    max_attempts: int = Field(3, ge=1)  # rewrites drawn per variant before it is given up
    solve_max_tokens: int = Field(1024, ge=1)

    @field_validator("counts")
    @classmethod
    def _counts(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= c <= 5 for c in v) or len(set(v)) != len(v):
            raise ValueError("counts: distinct numbers of distractors between 1 and 5")
        return sorted(v)


def sentences(text: str) -> list[str]:
    return [s for s in _SENT.split(text.strip()) if s]


def structure_problem(original: str, rewritten: str, count: int) -> str | None:
    """Why the rewrite is not "the original plus `count` inserted sentences" (None if it is)."""
    orig, new = sentences(original), sentences(rewritten)
    pos = 0
    for s in orig:
        try:
            pos = new.index(s, pos) + 1
        except ValueError:
            return f"changes an original sentence ({s[:60]!r})"
    inserted = len(new) - len(orig)
    if inserted != count:
        return f"inserts {inserted} sentences, {count} asked"
    return None


def run(ctx) -> dict:
    import json

    from skymath.errors import StageFailed
    from skymath.evaluate.benchmarks import BenchmarkSpec, load_benchmark
    from skymath.evaluate.robustness import (
        check_rewrite,
        distractor_messages,
        distractor_record,
        parse_rewrite,
    )
    from skymath.prompts import render
    from skymath.records import write_jsonl
    from skymath.synth.answer import answers_match, finalize
    from skymath.synth.client import ChatRequest, LLMClient

    p: Params = ctx.params
    spec = BenchmarkSpec(name="gsm8k", source=p.source, kind="gsm8k", limit=p.limit, sample=p.sample)
    items = ctx.my_slice(load_benchmark(spec, ctx.config.data.root))
    writer = ctx.writer(".jsonl", resume=True)

    def vid(it: dict, k: int) -> str:
        return f"{it['id']}#d{k}"

    wanted = [(it, k) for it in items for k in p.counts if vid(it, k) not in writer]
    info: dict = {"problems": len(items), "wanted": len(items) * len(p.counts), "verify": p.verify}
    if not wanted:
        return {**info, "complete": True}
    rejected_path, failures_path = ctx.output_path(".rejected.jsonl"), ctx.output_path(".failures.jsonl")
    tried: dict[str, int] = {}  # rewrites already rejected per variant: the next draws a new sample
    if rejected_path.exists():
        for line in rejected_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            tried[row["id"]] = max(tried.get(row["id"], 0), int(row.get("attempt", 0)) + 1)
    pending = [(it, k) for it, k in wanted if tried.get(vid(it, k), 0) < p.max_attempts]
    new_rejections: list[dict] = []
    failures: list[dict] = []
    kept = 0

    def reject(it: dict, k: int, why: str, text: str) -> bool:
        """Quarantine one rewrite; True when the variant gets another attempt."""
        attempt = tried.get(vid(it, k), 0)
        new_rejections.append({"id": vid(it, k), "attempt": attempt, "reason": why, "text": text[:2000]})
        tried[vid(it, k)] = attempt + 1
        return attempt + 1 < p.max_attempts

    client = LLMClient.for_context(ctx, cache_dir=ctx.work_dir)
    bar = ctx.progress(total=len(pending), desc=f"{ctx.stage_name}[{ctx.shard}]", unit="variant")
    try:
        while pending and not ctx.stop_requested():
            reqs = [ChatRequest(key=vid(it, k), messages=distractor_messages(it["problem"], k), temperature=p.temperature,
                                max_tokens=p.max_tokens, sample_index=tried.get(vid(it, k), 0)) for it, k in pending]
            results = client.run_batch(reqs)
            retry: list[tuple[dict, int]] = []
            to_solve: list[tuple[dict, int, str]] = []
            for (it, k), req, res in zip(pending, reqs, results, strict=True):
                if not res.ok:  # no verdict: a failure, retried by a rerun
                    failures.append({"id": vid(it, k), "attempt": req.sample_index, "step": "rewrite",
                                     "reason": res.error})
                    continue
                text = parse_rewrite(res.text)
                why = check_rewrite(it["problem"], text) or structure_problem(it["problem"], text, k)
                if why:
                    if reject(it, k, why, text):
                        retry.append((it, k))
                    continue
                if p.verify == "rule":
                    writer.write(_verified(distractor_record(it, k, text, ctx.stage_name), {"by": "rule"}))
                    kept += 1
                else:
                    to_solve.append((it, k, text))
            if to_solve:
                sreqs = [ChatRequest(key=f"{vid(it, k)}|solve", sample_index=0, temperature=0.0,
                                     max_tokens=p.solve_max_tokens,
                                     messages=[{"role": "user", "content": render("synth/answer", problem=text,
                                                                                  few_shot=True)}])
                         for it, k, text in to_solve]
                for (it, k, text), sres in zip(to_solve, client.run_batch(sreqs), strict=True):
                    if not sres.ok:  # an API error is never "the answer changed"
                        failures.append({"id": vid(it, k), "attempt": tried.get(vid(it, k), 0), "step": "solve-check",
                                         "reason": sres.error})
                        continue
                    final, why = finalize(sres.text)
                    if final is None:
                        why = f"unverified: the solve-check gave no answer ({why})"
                    elif not answers_match(final.answer, it["gold"]):
                        why = f"answer changed: the model answers {final.answer!r} on the rewrite, gold is {it['gold']!r}"
                    else:
                        rec = distractor_record(it, k, text, ctx.stage_name)
                        writer.write(_verified(rec, {"by": "solve", "model_answer": final.answer,
                                                     "model": sres.model}))
                        kept += 1
                        continue
                    if reject(it, k, why, text):
                        retry.append((it, k))
            bar.update(len(pending) - len(retry))
            pending = retry
    finally:
        bar.close()
        client.close()
    if new_rejections:
        with open(rejected_path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new_rejections))
    write_jsonl(failures_path, failures)
    given_up = sum(1 for it, k in wanted if tried.get(vid(it, k), 0) >= p.max_attempts and vid(it, k) not in writer)
    reasons: dict[str, int] = {}
    for r in new_rejections:
        key = r["reason"].split(":")[0].split("(")[0].strip()
        reasons[key] = reasons.get(key, 0) + 1
    info.update({"kept": kept, "rejected": len(new_rejections), "rejected_by_reason": reasons,
                 "given_up": given_up, "failures": len(failures), "usage": client.usage_totals(),
                 "complete": not pending})  # nothing left undrawn: done even if a stop came at the end
    tol = p.failure_tolerance if p.failure_tolerance is not None else ctx.config.llm.failure_tolerance
    if len(failures) > tol * len(wanted):
        raise StageFailed(f"stage {ctx.stage_name} shard {ctx.shard}: {len(failures)} of {len(wanted)} distractor "
                          f"requests failed (tolerance {tol:.0%}); see {failures_path.name}. Rerunning the shard "
                          "keeps what was written and retries only the rest")
    return info


def _verified(rec, how: dict):
    return rec.model_copy(update={"meta": {**rec.meta, "verified": how}})
