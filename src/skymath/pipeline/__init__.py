"""Pipeline layer: the stage DAG, the run directory, shard contexts and status."""

from skymath.pipeline.dag import Pipeline
from skymath.pipeline.rundir import RunDir

__all__ = ["Pipeline", "RunDir"]
