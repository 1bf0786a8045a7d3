"""Stage `dedup`: drop exact (normalized text) and near (MinHash LSH) duplicates, keeping the
first. One shard (dedup is global); removed records go to `shard-00000.removed.jsonl` with
`meta.dedup` = {kind, duplicate_of, jaccard}.

`key: problem_response` (the default) keeps different solutions of one problem (MetaMath's answer
augmentation); `key: problem` keeps one sample per problem. This stage declares dedup, so it also
accepts inputs that repeat a record id: the repeats are removed as kind "id", with both file:lines.
"""

from __future__ import annotations

from typing import Literal

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
    key: Literal["problem", "problem_response"] = "problem_response"


def check_config(cfg, name: str, source: str) -> None:
    if not cfg.stages[name].depends_on:
        raise UserError(f"{source}: stages.{name}.depends_on: a dedup stage needs an input stage")


def run(ctx) -> dict:
    from skymath.dedup import Deduper, Duplicate
    from skymath.records import ShardReader

    p: Params = ctx.params
    d = Deduper(p.near, p.threshold, p.num_perm, p.shingle, key=p.key)
    kept, removed = ctx.writer(resume=False), ctx.writer(".removed.jsonl", resume=False)
    counts = {"exact": 0, "near": 0, "id": 0}
    files = ctx.input_paths()
    first_of: dict[str, int] = {}  # record id -> (file index << 32) | line of its first occurrence

    def where(code: int) -> str:
        return f"{files[code >> 32]}:{code & 0xFFFFFFFF}"

    def records():
        for fi, path in enumerate(files):
            reader = ShardReader(path)
            for rec in reader:
                yield rec, (fi << 32) | reader.lineno

    with ctx.progress(desc=f"{ctx.stage_name} dedup", unit="rec") as bar:
        for rec, here in records():
            bar.update(1)
            first = first_of.setdefault(rec.id, here)
            if first != here:
                counts["id"] += 1
                dup = {"kind": "id", "duplicate_of": rec.id, "first": where(first), "this": where(here)}
                removed.write(rec.model_copy(update={"id": f"{rec.id}@{where(here)}",
                                                     "meta": {**rec.meta, "dedup": dup}}))
                continue
            found: Duplicate | None = d.check(rec.id, rec.problem, rec.response)
            if found is None:
                kept.write(rec)
            else:
                counts[found.kind] += 1
                removed.write(rec.model_copy(update={"meta": {**rec.meta, "dedup": found.to_dict()}}))
    return {"records": kept.count, "input": kept.count + removed.count, "kept": kept.count, "key": p.key,
            "removed_exact": counts["exact"], "removed_near": counts["near"], "removed_same_id": counts["id"]}
