"""Executors run a pipeline's shards: `local` (subprocesses on this machine, the default) and
`slurm` (sbatch arrays + dependencies, planned by executors/planner.py). The former `submitit`
executor was removed: submitit builds its own sbatch script and runs a pickled function under
its own USR2/requeue handling, so it could not run the planned jobs as they are (gpu-multinode
launcher, containers, per-shape site options, the trap) without re-implementing them around it.
`launch/submitit_launch.py` remains the Python entry point, on the same planner."""

from __future__ import annotations

from typing import Any

from skymath.config.schema import PipelineConfig
from skymath.errors import UserError
from skymath.pipeline.rundir import RunDir

KINDS = ("local", "slurm")
SUBMITIT_REMOVED = ("the submitit executor was removed: use --executor slurm (the same jobs, planned by one planner; "
                    "from Python: launch/submitit_launch.py or skymath.executors.slurm.SlurmExecutor)")


def require_scheduler(kind: str) -> None:
    """Submitting needs Slurm's commands here (a login node): say so in one line, not a traceback."""
    import shutil

    if kind in ("slurm", "submitit"):
        missing = [c for c in ("sbatch", "squeue", "srun") if shutil.which(c) is None]
        if missing:
            raise UserError(f"--executor {kind}: no Slurm cluster here ({', '.join(missing)} not on PATH); "
                            "submit from a login node of your cluster, or run with --executor local")


def get_executor(kind: str, run: RunDir, cfg: PipelineConfig, **opts: Any):
    """Instantiate an executor by name (imports lazily: the Slurm code is not needed locally)."""
    if kind == "local":
        from skymath.executors.local import LocalExecutor

        return LocalExecutor(run, cfg, **opts)
    if kind == "submitit":
        raise UserError(SUBMITIT_REMOVED)
    if kind == "slurm":
        from skymath.config.cluster import load_profile
        from skymath.executors.slurm import SlurmExecutor

        profile = load_profile(opts.pop("profile", None) or cfg.cluster.profile)
        return SlurmExecutor(run, cfg, profile, **opts)
    raise UserError(f"unknown executor {kind!r} (choose from {', '.join(KINDS)})")
