"""Executors run a pipeline's shards: `local` (subprocesses on this machine, the default),
`slurm` (sbatch arrays + dependencies), `submitit` (the same stages through submitit)."""

from __future__ import annotations

from typing import Any

from skymath.config.schema import PipelineConfig
from skymath.errors import UserError
from skymath.pipeline.rundir import RunDir

KINDS = ("local", "slurm", "submitit")


def get_executor(kind: str, run: RunDir, cfg: PipelineConfig, **opts: Any):
    """Instantiate an executor by name (imports lazily: the Slurm code is not needed locally)."""
    if kind == "local":
        from skymath.executors.local import LocalExecutor

        return LocalExecutor(run, cfg, **opts)
    if kind in ("slurm", "submitit"):
        from skymath.config.cluster import load_profile

        profile = load_profile(opts.pop("profile", None) or cfg.cluster.profile)
        if kind == "slurm":
            from skymath.executors.slurm import SlurmExecutor

            return SlurmExecutor(run, cfg, profile, **opts)
        from skymath.executors.submitit_exec import SubmititExecutor

        return SubmititExecutor(run, cfg, profile, **opts)
    raise UserError(f"unknown executor {kind!r} (choose from {', '.join(KINDS)})")
