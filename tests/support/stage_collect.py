"""Test stage kind `support.stage_collect`: copies every input record (checks inputs are complete)."""

from __future__ import annotations

from skymath.stages import StageParams

KIND = "support.stage_collect"
SHAPE = "cpu-single"


class Params(StageParams):
    pass


def run(ctx) -> dict:
    w = ctx.writer(resume=False)
    for r in ctx.my_slice(list(ctx.iter_inputs())):
        w.write(r.model_copy(update={"stage": ctx.stage_name}))
    return {}
