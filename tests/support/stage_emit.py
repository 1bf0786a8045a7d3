"""Test stage kind `support.stage_emit`: emits records slowly, can fail once or crash mid-shard.

Used by the backbone and executor tests to exercise real failures through the real worker.
"""

from __future__ import annotations

import os
import signal
import time

from pydantic import Field

from skymath.stages import StageParams

KIND = "support.stage_emit"
SHAPE = "cpu-array"


class Params(StageParams):
    records_per_shard: int = Field(5, ge=0)
    delay_s: float = 0.0
    fail_shards: list[int] = Field(default_factory=list)  # these shards fail ...
    fail_once: bool = True  # ... only on their first attempt
    kill_self_after: int | None = None  # SIGKILL the worker itself after writing this many records (first attempt)


def run(ctx) -> dict:
    p: Params = ctx.params
    attempt_file = ctx.work_dir / "attempts"
    attempt = int(attempt_file.read_text()) + 1 if attempt_file.exists() else 1
    attempt_file.write_text(str(attempt))
    w = ctx.writer()
    for j in range(p.records_per_shard):
        rid = f"{ctx.stage_name}-{ctx.shard}-{j}"
        if rid in w:
            continue
        w.write({"id": rid, "problem": f"problem {ctx.shard}.{j}", "stage": ctx.stage_name,
                 "meta": {"attempt": attempt}})
        w.flush()
        if p.kill_self_after is not None and attempt == 1 and w.count >= p.kill_self_after:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(p.delay_s)
    if ctx.shard in p.fail_shards and (attempt == 1 or not p.fail_once):
        raise RuntimeError(f"injected failure in shard {ctx.shard} (attempt {attempt})")
    return {"attempt": attempt}
