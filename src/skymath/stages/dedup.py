"""Stage `dedup`: drop exact (normalized text) and near (MinHash LSH) duplicate problems, keeping
the first. One shard (dedup is global); removed records go to `shard-00000.removed.jsonl` with
`meta.dedup` = {kind, duplicate_of, jaccard}."""

from __future__ import annotations

from pydantic import Field

from skymath.errors import UserError
from skymath.stages import StageParams

KIND = "dedup"
SHAPE = "cpu-single"
SINGLE_SHARD = True


class Params(StageParams):
    near: bool = True
    threshold: float = Field(0.85, gt=0, le=1)
    num_perm: int = Field(128, ge=16)
    shingle: int = Field(3, ge=1)


def check_config(cfg, name: str, source: str) -> None:
    if not cfg.stages[name].depends_on:
        raise UserError(f"{source}: stages.{name}.depends_on: a dedup stage needs an input stage")


def run(ctx) -> dict:
    from skymath.dedup import Deduper

    p: Params = ctx.params
    d = Deduper(p.near, p.threshold, p.num_perm, p.shingle)
    kept, removed = ctx.writer(resume=False), ctx.writer(".removed.jsonl", resume=False)
    counts = {"exact": 0, "near": 0}
    with ctx.progress(desc=f"{ctx.stage_name} dedup", unit="rec") as bar:
        for rec, dup in d.filter(ctx.iter_inputs()):
            bar.update(1)
            if dup is None:
                kept.write(rec)
            else:
                counts[dup.kind] += 1
                removed.write(rec.model_copy(update={"meta": {**rec.meta, "dedup": dup.to_dict()}}))
    return {"records": kept.count, "input": kept.count + removed.count, "kept": kept.count,
            "removed_exact": counts["exact"], "removed_near": counts["near"]}
