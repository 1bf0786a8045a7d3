"""What the scheduler says about THIS run's jobs: `squeue -j` / `sacct -j` scoped to the job ids in
the run's ledger (never the whole cluster's queue), retried on transient failure.

A query that still fails after its retries returns None ("the scheduler did not answer"), which
callers must treat as unknown: a failed poll never makes a running shard look missing, and never
ends `--wait` early.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable

ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
FAILED_STATES = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
CHUNK = 200  # job ids per squeue/sacct call (keeps argv short for runs with many resubmissions)

QueueKey = tuple[str, "int | None"]


def run_cmd(argv: list[str], timeout: float = 120.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """subprocess.run that reports a missing binary / timeout as a failed CompletedProcess."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]}: timed out after {timeout:.0f}s")


def retries() -> tuple[int, float]:
    """(attempts, first back-off in s): SKYMATH_SLURM_RETRIES / SKYMATH_SLURM_RETRY_S override."""
    return int(os.environ.get("SKYMATH_SLURM_RETRIES", "4")), float(os.environ.get("SKYMATH_SLURM_RETRY_S", "1.0"))


def _with_retries(argv: list[str], ok_errors: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, str]:
    """Run argv until it succeeds (exponential back-off). Returns (result, error or '')."""
    attempts, delay = retries()
    last = ""
    for i in range(max(1, attempts)):
        r = run_cmd(argv, timeout=60)
        err = (r.stderr or r.stdout).strip()
        if r.returncode == 0 or any(e in err for e in ok_errors):
            return r, ""
        last = f"{argv[0]} exit {r.returncode}: {err.splitlines()[-1] if err else 'no output'}"
        if i + 1 < attempts:
            time.sleep(delay * (2 ** i))
    return subprocess.CompletedProcess(argv, 1, "", last), last


def _chunks(ids: Iterable[str]) -> list[list[str]]:
    xs = sorted(set(ids), key=lambda s: (len(s), s))
    return [xs[i:i + CHUNK] for i in range(0, len(xs), CHUNK)]


class QueryError(RuntimeError):
    """The scheduler did not answer (after retries)."""


def query_squeue(job_ids: set[str]) -> dict[QueueKey, tuple[str, str]]:
    """(array job id, task id or None) -> (state, reason) for these jobs still in the queue.

    Raises QueryError when squeue keeps failing. A job id squeue no longer knows is simply absent
    (`squeue -j ONE_ID` fails with "Invalid job id" for that; it is not an outage)."""
    out: dict[QueueKey, tuple[str, str]] = {}
    for chunk in _chunks(job_ids):
        r, err = _with_retries(["squeue", "-h", "-r", "-j", ",".join(chunk), "-o", "%F|%K|%A|%T|%r"],
                               ok_errors=("Invalid job id",))
        if err:
            raise QueryError(err)
        for line in r.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 5:
                continue
            array_id, task, job, state, reason = parts
            if array_id in job_ids:
                out[(array_id, int(task) if task.isdigit() else None)] = (state, reason)
            elif job in job_ids:
                out[(job, None)] = (state, reason)
    return out


def query_sacct(job_ids: set[str]) -> dict[QueueKey, tuple[str, str, str]]:
    """(job id, task) -> (state, exit code, reason) from accounting. Raises QueryError on failure."""
    from skymath.executors.planner import expand_indices

    out: dict[QueueKey, tuple[str, str, str]] = {}
    for chunk in _chunks(job_ids):
        r, err = _with_retries(["sacct", "-n", "-P", "-X", "-j", ",".join(chunk), "-o", "JobID,State,ExitCode,Reason"])
        if err:
            raise QueryError(err)
        for line in r.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 4:
                continue
            jid, state, code, reason = parts[:4]
            state = state.split()[0] if state else ""
            if "_" in jid:
                job, task = jid.split("_", 1)
                tasks: list[int | None] = list(expand_indices(task)) if task.startswith("[") else [int(task)]
            else:
                job, tasks = jid, [None]
            for t in tasks:
                out[(job, t)] = (state, code, reason)
    return out
