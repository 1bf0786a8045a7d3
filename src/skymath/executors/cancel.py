"""Cancel a run's Slurm jobs from its ledger (what `skymath cancel` does)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from skymath.config.schema import PipelineConfig
from skymath.errors import UserError
from skymath.executors.planner import compress_indices
from skymath.executors.slurm import queued_jobs, submissions
from skymath.executors.slurm_queue import QueryError, run_cmd
from skymath.pipeline.rundir import RunDir


@dataclass
class Cancelled:
    stage: str
    role: str
    job_id: str
    shards: str  # compressed shard list still queued ('' for stop jobs)
    state: str  # pending | running (what it was)


def cancel_run(run: RunDir, cfg: PipelineConfig, stages: list[str] | None = None) -> list[Cancelled]:
    """scancel exactly this run's pending/running jobs (optionally of some stages); ledger it."""
    for s in stages or []:
        if s not in cfg.stages:
            raise UserError(f"{run.config_path}: no stage {s!r} (stages: {', '.join(cfg.stages)})")
    subs = [s for s in submissions(run) if not stages or s.stage in stages]
    if not subs:
        return []
    try:
        queued = queued_jobs(subs)
    except QueryError as e:
        raise UserError(f"cannot tell which of this run's jobs are queued ({e}); nothing was cancelled, "
                        "try again when squeue answers") from None
    if not queued:
        return []
    ids = sorted({q.job_id for q in queued}, key=lambda j: (len(j), j))
    r = run_cmd(["scancel", *ids], env=dict(os.environ))
    run.append_ledger({"event": "cancel", "executor": "slurm", "launch": time.strftime("%Y%m%d-%H%M%S") + "-cancel",
                       "job_ids": ids, "stages": stages or "all", "reason": "skymath cancel",
                       "ok": r.returncode == 0, "error": (r.stderr or "").strip()[-500:] or None})
    if r.returncode != 0:
        raise UserError(f"scancel {' '.join(ids)} failed: {(r.stderr or r.stdout).strip()} "
                        "(recorded in jobs.jsonl; run `skymath status` to see what is still queued)")
    return [Cancelled(q.stage, q.role, q.job_id, compress_indices(q.active_shards), q.state.lower())
            for q in queued]
