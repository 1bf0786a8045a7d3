"""Test service stage `support.slurm_service`: publishes an endpoint file, serves until STOP.

Stands in for an llm-server stage in the Slurm service-orchestration test: the Slurm executor
must start it before its consumers and stop it (STOP file) once they have finished.
"""

from __future__ import annotations

import json
import os
import socket
import time

from skymath.stages import StageParams

KIND = "support.slurm_service"
SHAPE = "cpu-array"
SERVICE = True
COOPERATIVE_STOP = True


class Params(StageParams):
    max_s: float = 600.0


def run(ctx) -> dict:
    d = ctx.run.service_dir(ctx.stage_name)
    d.mkdir(parents=True, exist_ok=True)
    ep = d / f"endpoint-{ctx.shard}.json"
    ep.write_text(json.dumps({"base_url": f"http://{socket.gethostname()}:0/v1",
                              "job": os.environ.get("SLURM_JOB_ID"), "shard": ctx.shard}))
    t0 = time.monotonic()
    try:
        while not (d / "STOP").exists() and not ctx.stop_requested() and time.monotonic() - t0 < ctx.params.max_s:
            time.sleep(0.5)
    finally:
        ep.unlink(missing_ok=True)
    (d / f"stopped-{ctx.shard}").write_text("STOP file" if (d / "STOP").exists() else "signal/timeout")
    return {}
