"""Stage `hardness`: select hard problems, by an LLM judge (CoT prompt, rating 1-10), by a cheap
heuristic (the MATH level of the root seed, then solution length), or at random (the paper's
strong baseline: same size as another selection, to compare).

judge: each shard rates its slice; keeps ratings >= min_rating, or the top `fraction` of its
slice. Every record carries `meta.hardness`; an answer without a usable rating goes to
`shard-NNNNN.judge_failed.jsonl` with the reason. A request that failed (after the client's
retries) is no rating at all: it is listed in `shard-NNNNN.failures.jsonl`, and a shard with more
of them than `failure_tolerance` (default 0) fails instead of selecting without them; its rerun
retries only those requests (the other answers come from the cache). heuristic / random: a
global choice of k (or a fraction, or as many as `same_size_as` produced), each shard writes its part.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from skymath.errors import UserError
from skymath.stages import StageParams

KIND = "hardness"
SHAPE = "cpu-array"


class Params(StageParams):
    method: Literal["judge", "heuristic", "random"] = "judge"
    min_rating: float | None = Field(None, ge=1, le=10)  # judge: keep ratings >= this
    k: int | None = Field(None, ge=1)  # heuristic / random
    fraction: float | None = Field(None, gt=0, le=1)  # judge (per shard) / heuristic / random
    same_size_as: str | None = None  # random: as many records as this stage produced
    input: list[str] | None = None  # input stages (default: every dependency except same_size_as)
    seed: int | None = None  # random; default run.seed
    prompt: str = "judge/hardness"
    include_response: bool = True  # show the judge the reference response
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(1024, ge=1)
    batch_size: int = Field(256, ge=1)
    failure_tolerance: float = Field(0.0, ge=0, le=1)  # judge: failed requests allowed per shard (fraction)


def check_config(cfg, name: str, source: str) -> None:
    spec = cfg.stages[name]
    p: Params = spec.params
    where = f"{source}: stages.{name}.params"
    if not spec.depends_on:
        raise UserError(f"{source}: stages.{name}.depends_on: a hardness stage needs an input stage")
    for s in (p.input or []) + ([p.same_size_as] if p.same_size_as else []):
        if s not in spec.depends_on:
            raise UserError(f"{where}: stage {s!r} must be in depends_on")
    sizes = [x is not None for x in (p.k, p.fraction, p.same_size_as)]
    if p.method == "judge":
        if p.k is not None or p.same_size_as:
            raise UserError(f"{where}: method judge selects by min_rating or fraction (per shard), not k/same_size_as")
        if (p.min_rating is None) == (p.fraction is None):
            raise UserError(f"{where}: method judge needs exactly one of min_rating and fraction")
    elif sum(sizes) != 1 or (p.method == "heuristic" and p.same_size_as):
        raise UserError(f"{where}: method {p.method} needs exactly one of k, fraction"
                        + (", same_size_as" if p.method == "random" else ""))
    if p.method != "judge" and p.min_rating is not None:
        raise UserError(f"{where}: min_rating is for method judge")


def _inputs(ctx, p: Params) -> list[str]:
    return p.input or [s for s in ctx.spec.depends_on if s != p.same_size_as]


def heuristic_key(rec) -> tuple[int, int]:
    """Harder first: the root seed's MATH level (meta.root_level, else the record's level), then
    the number of words of the solution."""
    from skymath.decontam.ngram import words

    level = rec.meta.get("root_level", rec.level)
    try:
        level = int(level) if level is not None else 0
    except (TypeError, ValueError):
        level = 0
    return level, len(words(rec.response))


def run(ctx) -> dict:
    p: Params = ctx.params
    if p.method == "judge":
        return _run_judge(ctx, p)
    return _run_global(ctx, p)


def _run_global(ctx, p: Params) -> dict:
    import numpy as np

    from skymath.records import read_records

    records = list(read_records([f for s in _inputs(ctx, p) for f in ctx.input_paths(s)]))
    n = len(records)
    if p.same_size_as:
        m = sum(1 for _ in read_records(ctx.input_paths(p.same_size_as)))
    elif p.k is not None:
        m = p.k
    else:
        m = round(n * (p.fraction or 0))
    m = min(m, n)
    if p.method == "random":
        seed = ctx.config.run.seed if p.seed is None else p.seed
        chosen = set(np.random.default_rng(seed).choice(n, size=m, replace=False).tolist())
    else:
        keys = [heuristic_key(r) for r in records]
        order = sorted(range(n), key=lambda i: (-keys[i][0], -keys[i][1], i))
        chosen = set(order[:m])
    mine = ctx.my_slice(list(range(n)))
    w = ctx.writer(resume=False)
    for i in mine:
        if i in chosen:
            rec = records[i]
            meta = {"method": p.method}
            if p.method == "heuristic":
                meta.update(dict(zip(("level", "words"), heuristic_key(rec), strict=True)))
            w.write(rec.model_copy(update={"meta": {**rec.meta, "hardness": meta}}))
    return {"records": w.count, "input": len(mine), "selected_total": m, "input_total": n, "method": p.method}


def _run_judge(ctx, p: Params) -> dict:
    from skymath.select import shard_inputs
    from skymath.select.judge import check_failures, failure_row, hardness_prompt, judge, parse_rating
    from skymath.synth.client import LLMClient

    records = list(shard_inputs(ctx, _inputs(ctx, p)))
    client = LLMClient.for_context(ctx, cache_dir=ctx.work_dir)
    rated: list[tuple[object, float]] = []
    failures: list[dict] = []
    failed = ctx.writer(".judge_failed.jsonl", resume=False)
    try:
        with ctx.progress(total=len(records), desc=f"{ctx.stage_name}[{ctx.shard}] judge", unit="rec") as bar:
            for lo in range(0, len(records), p.batch_size):
                batch = records[lo:lo + p.batch_size]
                prompts = [(r.id, hardness_prompt(r.problem, r.response if p.include_response else None, p.prompt))
                           for r in batch]
                for rec, j in zip(batch, judge(client, prompts, parse_rating, p.temperature, p.max_tokens,
                                               progress=lambda _r: bar.update(1)), strict=True):
                    if j.request_failed:  # no answer: never a rating (and never "not hard")
                        failures.append(failure_row(rec, j))
                    elif j.value is None:
                        failed.write(rec.model_copy(update={"meta": {**rec.meta, "hardness": {
                            "method": "judge", "rating": None, "error": j.error, "answer": (j.text or "")[-2000:]}}}))
                    else:
                        rated.append((rec, float(j.value)))
    finally:
        client.close()
    check_failures(ctx, failures, len(records), p.failure_tolerance, "judge")
    if p.min_rating is not None:
        keep = [(r, v) for r, v in rated if v >= p.min_rating]
    else:
        m = round(len(rated) * (p.fraction or 0))
        top = sorted(range(len(rated)), key=lambda i: (-rated[i][1], i))[:m]
        keep = [rated[i] for i in sorted(top)]
    w = ctx.writer(resume=False)
    for rec, v in keep:
        w.write(rec.model_copy(update={"meta": {**rec.meta, "hardness": {"method": "judge", "rating": v}}}))
    hist: dict[str, int] = {}
    for _, v in rated:
        hist[f"{v:g}"] = hist.get(f"{v:g}", 0) + 1
    return {"records": w.count, "input": len(records), "rated": len(rated), "judge_failed": failed.count,
            "failed": len(failures), "rating_histogram": hist, "method": "judge"}
