"""Test stage `support.slurm_consumer`: waits for its service's endpoints and records them."""

from __future__ import annotations

from skymath.errors import UserError
from skymath.stages import StageParams

KIND = "support.slurm_consumer"
SHAPE = "cpu-array"


class Params(StageParams):
    service: str = "server"


def run(ctx) -> dict:
    eps = ctx.service_endpoints(ctx.params.service, wait_s=240)
    if not eps:
        raise UserError(f"no endpoint published by service {ctx.params.service!r}")
    w = ctx.writer()
    w.write({"id": f"{ctx.stage_name}-{ctx.shard}", "problem": eps[0]["base_url"], "stage": ctx.stage_name})
    return {"endpoints": len(eps)}
