"""Stage `report`: the run's report (tables, plots, run summary) at runs/<run>/report/."""

from __future__ import annotations

from pydantic import Field

from skymath.stages import StageParams

KIND = "report"
SHAPE = "cpu-single"
SINGLE_SHARD = True


class Params(StageParams):
    compare: list[str] = Field(default_factory=list)  # other run dirs for the data-scaling curve


def run(ctx) -> dict:
    from skymath.evaluate.report import write_report

    path = write_report(ctx.run.root, ctx.params.compare)
    return {"report": str(path), "artifacts": sorted(p.name for p in path.parent.iterdir())}
