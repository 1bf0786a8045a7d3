"""Stage `seeds`: load, normalize and filter seed problems; shard i writes its slice."""

from __future__ import annotations

from pydantic import Field

from skymath.data.seeds import SourceSpec
from skymath.stages import StageParams

KIND = "seeds"
SHAPE = "cpu-array"


class Params(StageParams):
    sources: list[str | SourceSpec] = Field(default_factory=lambda: ["math_train"])
    levels: list[int] | None = None  # stage 2: [4, 5]
    subjects: list[str] | None = None
    limit: int | None = Field(None, ge=1)
    sample_seed: int | None = None  # shuffle with this seed before `limit` (else file order)


def run(ctx) -> dict:
    from skymath.data.seeds import load_seeds

    p: Params = ctx.params
    records = load_seeds(p.sources, ctx.config.data.root, p.levels, p.subjects, p.limit, p.sample_seed,
                         cache_dir=ctx.run.root / "cache" / "datasets")
    mine = ctx.my_slice(records)
    w = ctx.writer(resume=False)
    for r in mine:
        w.write(r)
    return {"total_selected": len(records)}
