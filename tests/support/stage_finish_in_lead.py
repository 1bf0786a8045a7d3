"""Test stage kind `support.stage_finish_in_lead`: a cooperative stage that is told to stop (the
time limit's USR2) and then either finishes all its work anyway (`complete`) or returns early."""

from __future__ import annotations

import time

from skymath.records import Record
from skymath.stages import StageParams

KIND = "support.stage_finish_in_lead"
SHAPE = "cpu-single"
COOPERATIVE_STOP = True


class Params(StageParams):
    finish_anyway: bool = True


def run(ctx) -> dict:
    w = ctx.writer()
    w.write(Record(id=f"r{ctx.shard}-0", problem="p", response="r"))
    (ctx.work_dir / "started").write_text("1")
    deadline = time.monotonic() + 120
    while not ctx.stop_requested() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not ctx.params.finish_anyway:
        return {}
    w.write(Record(id=f"r{ctx.shard}-1", problem="p", response="r"))  # the last piece of work
    return {"complete": True}
