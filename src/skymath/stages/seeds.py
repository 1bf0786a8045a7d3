"""Stage `seeds`: load, normalize and filter seed problems; shard i writes its slice.

Every count it reports is counted from what it wrote (the writer refuses a repeated id with an
error naming both rows), so a lost seed can no longer hide behind a count taken before the loss.
Rows left out for a reason other than the configured filters (an empty problem) are listed in
`shard-00000.dropped.jsonl`; `summary.json` totals the written records per source over shards.
"""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from skymath.data.seeds import SourceSpec
from skymath.errors import StageFailed
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
    from skymath.data.seeds import load_seed_set
    from skymath.records import write_jsonl

    p: Params = ctx.params
    ss = load_seed_set(p.sources, ctx.config.data.root, p.levels, p.subjects, p.limit, p.sample_seed,
                       cache_dir=ctx.run.root / "cache" / "datasets")
    mine = ctx.my_slice(ss.records)
    w = ctx.writer(resume=False)
    written: Counter[str] = Counter()
    for r in mine:
        if w.write(r, origin=ss.origins.get(r.id)):
            written[r.id.split(":", 1)[0]] += 1
    if w.count != len(mine):  # cannot happen while write() raises on repeats; never report what was not written
        raise StageFailed(f"stage {ctx.stage_name} shard {ctx.shard}: wrote {w.count} of {len(mine)} seeds")
    if ctx.shard == 0 and ss.dropped:
        write_jsonl(ctx.output_path(".dropped.jsonl"), ss.dropped)
    return {"written_by_source": dict(written), "selected_total": len(ss.records),
            "loaded_by_source": dict(ss.loaded), "dropped_total": len(ss.dropped)}


def after_shard_done(ctx) -> None:
    """When the last shard finishes: `summary.json` with the written records per source (from the markers)."""
    import json

    from skymath.records import atomic_write_text

    run, name, k = ctx.run, ctx.stage_name, ctx.num_shards
    if not run.stage_complete(name, k):
        return
    by_source: Counter[str] = Counter()
    written = 0
    selected = None
    for i in range(k):
        m = run.read_marker(run.done_path(name, i)) or {}
        written += int(m.get("records", 0))
        by_source.update(m.get("written_by_source") or {})
        selected = m.get("selected_total", selected)
    summary = {"written": written, "written_by_source": dict(sorted(by_source.items())), "selected": selected,
               "complete": written == selected}
    atomic_write_text(ctx.stage_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
