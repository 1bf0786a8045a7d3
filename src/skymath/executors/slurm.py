"""Slurm executor: renders and submits the jobs the ONE planner (executors/planner.py) plans.

* `plan()` renders every script a launch WOULD submit (into `runs/<run>/slurm/<launch>-dry/`)
  and submits nothing; `launch()` / `resubmit()` plan, render, then hand each job to `sbatch`
  in order, replacing `<stage.pK>` placeholders in dependencies with the ids just returned.
* The task -> shard map is a per-launch file (`runs/<run>/slurm/<launch>/<stage>.p<k>.shards`,
  line = task id), so a resubmission never confuses jobs still queued from an earlier launch.
* `--dependency=... --kill-on-invalid-dep=yes` between stages; service stop jobs use `afterany`.
* A launch that fails half-way (an sbatch error after some jobs were queued) cancels what it
  queued, so no service is left running for consumers that will never come.
* Every submission and cancel is a line in `runs/<run>/jobs.jsonl`; `augment_status` turns the
  ledger plus squeue/sacct calls scoped to this run's job ids into running/pending/failed
  states, and into "unknown" (never "missing") when the scheduler does not answer.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymath.config.cluster import ClusterProfile
from skymath.config.schema import PipelineConfig
from skymath.errors import UserError
from skymath.executors.planner import (  # noqa: F401 - re-exported for callers and tests
    ArrayPart,
    PlanInput,
    PlannedJob,
    QueuedJob,
    compress_indices,
    dependency_string,
    expand_indices,
    plan_jobs,
    resolve_ref,
    split_array,
)
from skymath.executors.slurm_queue import (  # noqa: F401 - re-exported
    ACTIVE_STATES,
    FAILED_STATES,
    PENDING_STATES,
    QueryError,
    query_sacct,
    query_squeue,
    run_cmd,
)
from skymath.pipeline.dag import Pipeline
from skymath.pipeline.rundir import RunDir
from skymath.pipeline.status import StageStatus

EXECUTORS = ("slurm", "submitit")  # ledger entries of both (submitit: runs from older versions)
DEFAULT_MAX_ARRAY_SIZE = 1001
_cmd = run_cmd


def max_array_size(profile: ClusterProfile) -> int:
    """The profile's max_array_size, else MaxArraySize from `scontrol show config` (else 1001)."""
    if profile.max_array_size:
        return profile.max_array_size
    r = run_cmd(["scontrol", "show", "config"], timeout=30)
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", r.stdout, re.M) if r.returncode == 0 else None
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY_SIZE


def log_path(pattern: str, job_id: str, task: int | None) -> str:
    return pattern.replace("%A", str(job_id)).replace("%a", str(task if task is not None else "")).replace(
        "%j", str(job_id))


# ---- the ledger view ---------------------------------------------------------------------------------------
@dataclass
class Submission:
    stage: str
    job_id: str
    shards: list[int]
    tasks: list[int]
    log: str
    role: str = "stage"
    entry: dict[str, Any] = field(default_factory=dict)

    def task_of(self, shard: int) -> int | None:
        try:
            return self.tasks[self.shards.index(shard)]
        except ValueError:
            return None

    def ref(self, shard: int) -> str:
        t = self.task_of(shard)
        return f"{self.job_id}_{t}" if t is not None and self.entry.get("array", True) else self.job_id


def submissions(run: RunDir) -> list[Submission]:
    """Every real (not dry-run) Slurm submission in the ledger, oldest first."""
    out = []
    for e in run.ledger():
        if e.get("executor") in EXECUTORS and e.get("event") == "submit" and e.get("job_id"):
            out.append(Submission(e["stage"], str(e["job_id"]), list(e.get("shards", [])),
                                  list(e.get("tasks", e.get("shards", []))), e.get("log", ""),
                                  e.get("role", "stage"), e))
    return out


def queued_jobs(subs: list[Submission]) -> list[QueuedJob]:
    """The ledger's submissions still pending/running (ONE scoped squeue). Raises QueryError."""
    if not subs:
        return []
    queue = query_squeue({s.job_id for s in subs})
    out = []
    for sub in subs:
        if sub.role == "stop-service":
            q = queue.get((sub.job_id, None))
            if q and q[0] in ACTIVE_STATES:
                out.append(QueuedJob(sub.stage, sub.job_id, sub.role, [], [], [], False, q[0]))
            continue
        active, states = [], set()
        for shard, task in zip(sub.shards, sub.tasks, strict=False):
            st = queue.get((sub.job_id, task)) or queue.get((sub.job_id, None))
            if st and st[0] in ACTIVE_STATES:
                active.append(shard)
                states.add(st[0])
        if active:
            state = "RUNNING" if states - PENDING_STATES else sorted(states)[0]
            out.append(QueuedJob(sub.stage, sub.job_id, sub.role, sub.shards, sub.tasks, active,
                                 bool(sub.entry.get("array", True)), state))
    return out


# ---- status -----------------------------------------------------------------------------------------------
UNKNOWN = "unknown"  # ShardState.state when the scheduler did not answer (never "missing")


def cancelled_job_ids(run: RunDir) -> dict[str, str]:
    """Job id -> why, for jobs `skymath cancel` (or a rolled-back launch) cancelled, from the ledger."""
    return {str(j): str(e.get("reason", "cancelled")) for e in run.ledger() if e.get("event") == "cancel"
            for j in e.get("job_ids", [])}


def augment_status(run: RunDir, cfg: PipelineConfig, stages: list[StageStatus]) -> None:
    """Fill in running/pending states, job ids and log paths from the ledger + squeue + sacct,
    both scoped (`-j`) to the latest submission of each unfinished shard. When squeue does not
    answer (after retries), every unfinished submitted shard is "unknown" (its error says why),
    never "missing", so `--wait` keeps waiting."""
    latest: dict[tuple[str, int], Submission] = {}
    for sub in submissions(run):  # later submissions win
        for shard in sub.shards:
            latest[(sub.stage, shard)] = sub
    pending = {(st.name, sh.shard): latest[(st.name, sh.shard)] for st in stages for sh in st.shards
               if sh.state != "done" and (st.name, sh.shard) in latest}
    if not pending:
        return
    ids = {sub.job_id for sub in pending.values()}
    try:
        queue: dict | None = query_squeue(ids)
    except QueryError as e:
        queue, queue_error = None, str(e)
    try:
        acct: dict | None = query_sacct(ids) if queue is not None else {}
    except QueryError:
        acct = None
    cancelled = cancelled_job_ids(run)
    for st in stages:
        for sh in st.shards:
            sub = pending.get((st.name, sh.shard))
            if sub is None:
                continue
            task = sub.task_of(sh.shard)
            ref = sub.ref(sh.shard)
            sh.job_id = ref
            sh.log = log_path(sub.log, sub.job_id, task)
            if queue is None:
                sh.state = UNKNOWN
                sh.error = f"scheduler did not answer: {queue_error}"
                continue
            q = queue.get((sub.job_id, task)) or queue.get((sub.job_id, None))
            if q and q[0] in ACTIVE_STATES:
                sh.state = "pending" if q[0] in PENDING_STATES else "running"
                if sh.state == "pending" and q[1] not in ("None", ""):
                    sh.error = f"waiting: {q[1]}"
                continue
            if sub.job_id in cancelled:  # the user stopped it (its worker may have left a .failed)
                sh.state = "missing"
                sh.error = f"cancelled by {cancelled[sub.job_id]} (job {ref})"
                continue
            if sh.state == "failed":
                continue
            if acct is None:
                sh.error = f"slurm job {ref} left the queue (sacct did not answer)"
                continue
            a = acct.get((sub.job_id, task)) or acct.get((sub.job_id, None))
            if a is None:
                continue
            _describe_finished(sh, st, sub, ref, a)


def _describe_finished(sh, st: StageStatus, sub: Submission, ref: str, acct: tuple[str, str, str]) -> None:
    """State/error of a shard whose job left the queue without a .done marker."""
    state, code, reason = acct
    if state in FAILED_STATES:
        sh.state = "failed"
        sh.error = f"slurm job {ref} {state} (exit {code})"
    elif state == "CANCELLED":
        # kill-on-invalid-dep: sacct's reason can still read "None" right after the
        # cancel, so a job that waited on parents counts as cancelled by them
        if "Depend" in reason or sub.entry.get("dependency"):
            sh.error = f"cancelled: a parent job failed (job {ref}, {reason})"
        else:
            sh.state = "failed"
            sh.error = f"slurm job {ref} cancelled"
    elif state == "COMPLETED" and not st.service:
        sh.error = f"slurm job {ref} completed without a .done marker"


# ---- the executor ----------------------------------------------------------------------------------------
class SlurmExecutor:
    def __init__(self, run: RunDir, cfg: PipelineConfig, profile: ClusterProfile,
                 env: dict[str, str] | None = None, python: str | None = None, quiet: bool = False) -> None:
        self.run = run
        self.cfg = cfg
        self.profile = profile
        self.pipe = Pipeline.from_config(cfg)
        self.env = {**os.environ, **(env or {})}
        self.python = python or profile.python or sys.executable
        self.quiet = quiet
        self.root = Path(run.root).resolve()

    # ---- public API -------------------------------------------------------------------------------
    def plan(self, stages: list[str] | None = None) -> list[PlannedJob]:
        """Render every script a launch of `stages` (default all) WOULD submit, into
        `runs/<run>/slurm/<launch>-dry/`, and submit nothing. Each PlannedJob's `script` holds
        the exact #SBATCH options (for `sbatch --test-only`), `dependency` uses `<stage.pK>`
        placeholders for jobs of this launch. Raises UserError for a bad profile/config value."""
        selected = self._check_stages(stages) if stages else list(self.pipe.order)
        jobs, _ = self._plan(selected, dry_run=True)
        return jobs

    def launch(self, stages: list[str] | None = None, dry_run: bool = False) -> int:
        """Submit every selected stage that has missing shards (not already queued)."""
        selected = self._check_stages(stages) if stages else list(self.pipe.order)
        self._launch(selected, reason="launch", dry_run=dry_run)
        return 0

    def resubmit(self, stage: str | None = None) -> int:
        """Exactly the failed or missing shards (not pending/running), re-chaining dependents."""
        if stage is not None:
            self._check_stages([stage])
            selected = [stage, *self.pipe.descendants(stage)]
        else:
            selected = list(self.pipe.order)
        self._launch(selected, reason="resubmit", dry_run=False)
        return 0

    # ---- planning ---------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def _check_stages(self, stages: list[str]) -> list[str]:
        for s in stages:
            if s not in self.cfg.stages:
                raise UserError(f"{self.run.config_path}: no stage {s!r} (stages: {', '.join(self.cfg.stages)})")
        return [s for s in self.pipe.order if s in stages]

    def _queued(self, dry_run: bool) -> list[QueuedJob]:
        """What is still queued from earlier launches; a real launch refuses to guess."""
        try:
            return queued_jobs(submissions(self.run))
        except QueryError as e:
            if not dry_run:
                raise UserError(f"cannot tell which shards are still queued ({e}); nothing was submitted. "
                                "Is the cluster up? (local cluster: `slurm/local-cluster.sh up`)") from None
            self._say(f"warning: squeue did not answer ({e}): planning as if nothing were queued")
            return []

    def _plan(self, selected: list[str], dry_run: bool) -> tuple[list[PlannedJob], Path]:
        """Plan (pure, planner.plan_jobs) and render every job's script into a fresh launch dir."""
        specs = self.cfg.stages
        inp = PlanInput(
            order=list(self.pipe.order), num_shards={n: s.num_shards for n, s in specs.items()},
            parents={n: self.pipe.parents(n) for n in specs}, services={n: list(s.services) for n, s in specs.items()},
            is_service=self.pipe.is_service,
            done={n: set(self.run.done_shards(n, s.num_shards)) for n, s in specs.items()},
            queued=self._queued(dry_run), max_array_size=max_array_size(self.profile),
            throttle={n: s.resources.array_throttle for n, s in specs.items()})
        jobs = plan_jobs(inp, selected)
        launch_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2) + ("-dry" if dry_run else "")
        out_dir = self.root / "slurm" / launch_id
        for job in jobs:  # render everything first: a bad value fails before anything is queued
            self._render(job, jobs, out_dir)
        return jobs, out_dir

    # ---- rendering --------------------------------------------------------------------------------
    def _write(self, path: Path, text: str, mode: int = 0o644) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def _render(self, job: PlannedJob, jobs: list[PlannedJob], out_dir: Path) -> None:
        if job.role == "stop-service":
            self._render_stop(job, jobs, out_dir)
        else:
            self._render_array(job, out_dir)

    def _render_array(self, job: PlannedJob, out_dir: Path) -> None:
        from skymath.executors.render import job_spec, render_script

        spec = self.cfg.stages[job.stage]
        job.shard_file = out_dir / f"{job.key}.shards"
        # line t holds the shard of array task t (task ids are shard - base)
        self._write(job.shard_file, "\n".join(str(job.base + t) for t in range(max(job.tasks) + 1)) + "\n")
        logs = self.root / "logs" / job.stage
        logs.mkdir(parents=True, exist_ok=True)
        job.log = str(logs / "%A_%a.out")
        js = job_spec(self.profile, spec, stage=job.stage, run_dir=self.root, job_name=f"{self.run.root.name}.{job.stage}",
                      output=job.log, worker_argv_tail=[str(self.root), job.stage, f"@{job.shard_file}"],
                      array=job.array, chdir=Path.cwd(), python=self.python, data_root=str(self.cfg.data.root),
                      api_key_env=self.cfg.llm.api_key_env)
        job.script = out_dir / f"{job.key}.sh"
        self._write(job.script, render_script(js), 0o755)

    def _render_stop(self, job: PlannedJob, jobs: list[PlannedJob], out_dir: Path) -> None:
        """The stop job names its service's job ids, so it is rendered again once they are known."""
        from skymath.executors.render import render_stop_job

        logs = self.root / "logs" / job.stage
        logs.mkdir(parents=True, exist_ok=True)
        job.log = str(logs / "stop-%j.out")
        text = render_stop_job(self.profile, run_dir=self.root, service=job.stage,
                               service_job=",".join(resolve_ref(r, jobs) for r in job.service_refs),
                               stop_file=self.run.service_dir(job.stage).resolve() / "STOP", output=job.log,
                               chdir=Path.cwd(), job_name=f"{self.run.root.name}.{job.stage}.stop")
        job.script = job.shard_file = out_dir / f"{job.key}.sh"
        self._write(job.script, text, 0o755)

    # ---- submitting -------------------------------------------------------------------------------
    def _launch(self, selected: list[str], reason: str, dry_run: bool) -> list[PlannedJob]:
        jobs, out_dir = self._plan(selected, dry_run)
        launch_id = out_dir.name
        if dry_run:
            for job in jobs:
                self._say("$ " + shlex.join(self.sbatch_argv(job)))
        else:
            self._submit_all(jobs, out_dir, launch_id, reason)
        self.run.append_ledger({"event": reason, "executor": "slurm", "launch": launch_id, "dry_run": dry_run,
                                "stages": [j.stage for j in jobs if j.role == "stage"],
                                "jobs": [j.job_id for j in jobs if j.job_id]})
        self._report(jobs, dry_run, out_dir, reason)
        return jobs

    def _submit_all(self, jobs: list[PlannedJob], out_dir: Path, launch_id: str, reason: str) -> None:
        """sbatch each job in order; on the first failure cancel what this launch queued."""
        for job in jobs:
            job.dependency = dependency_string(job, jobs)  # placeholders -> the ids just returned
            if job.role == "service":  # a fresh service must not see the last one's STOP file
                self.run.service_dir(job.stage).joinpath("STOP").unlink(missing_ok=True)
            if job.role == "stop-service":
                self._render_stop(job, jobs, out_dir)
            try:
                self._sbatch(job, launch_id, reason)
            except UserError as e:
                cancelled = self._roll_back(jobs, launch_id, str(e))
                raise UserError(f"{e}; cancelled the {len(cancelled)} job(s) this launch had queued"
                                + (f" ({', '.join(cancelled)})" if cancelled else "")) from None
        for job in jobs:
            if job.replaces and job.job_id:  # superseded stop jobs of a reused service
                self.cancel_jobs(job.replaces, launch_id, f"stop job {job.job_id}, which replaces it")

    def sbatch_argv(self, job: PlannedJob) -> list[str]:
        argv = ["sbatch", "--parsable"]
        if job.dependency:
            argv.append(f"--dependency={job.dependency}")
            if job.kill_on_invalid:
                argv.append("--kill-on-invalid-dep=yes")
        argv.append(str(job.script))
        return argv

    def _sbatch(self, job: PlannedJob, launch_id: str, reason: str) -> None:
        argv = self.sbatch_argv(job)
        r = run_cmd(argv, env=self.env)
        if r.returncode != 0:
            err = "; ".join(ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip())
            raise UserError(f"sbatch for stage {job.stage} ({job.role}) failed: {err} (script {job.script})")
        job.job_id = r.stdout.strip().split(";")[0]
        self.run.append_ledger({
            "event": "submit", "executor": "slurm", "launch": launch_id, "reason": reason, "role": job.role,
            "stage": job.stage, "job_id": job.job_id, "shards": job.shards, "tasks": job.tasks,
            "array": job.array or False, "script": str(job.script), "shard_file": str(job.shard_file),
            "log": job.log, "dependency": job.dependency, "sbatch": argv})
        self._say(f"submitted {job.stage}" + (f" ({job.role})" if job.role != "stage" else "")
                  + (f" shards {compress_indices(job.shards)}" if job.shards else "")
                  + f" as job {job.job_id}" + (f" after {job.dependency}" if job.dependency else ""))

    def _roll_back(self, jobs: list[PlannedJob], launch_id: str, why: str) -> list[str]:
        ids = [j.job_id for j in reversed(jobs) if j.job_id]
        if ids:
            self.cancel_jobs(ids, launch_id, f"the rollback of failed launch {launch_id} ({why[:200]})")
        return ids

    def cancel_jobs(self, job_ids: list[str], launch_id: str, why: str) -> list[str]:
        """scancel exactly these job ids and record it in the ledger; returns those scancel took."""
        if not job_ids:
            return []
        r = run_cmd(["scancel", *job_ids], env=self.env)
        self.run.append_ledger({"event": "cancel", "executor": "slurm", "launch": launch_id, "job_ids": job_ids,
                                "reason": why, "ok": r.returncode == 0,
                                "error": (r.stderr or "").strip()[-500:] or None})
        return job_ids

    def _report(self, jobs: list[PlannedJob], dry_run: bool, out_dir: Path, reason: str) -> None:
        if not jobs:
            self._say(f"nothing to {reason}: every selected shard is done or already queued")
            return
        if dry_run:
            self._say(f"\nrendered {len(jobs)} script(s) into {out_dir}")
        self._say("dependency graph:")
        for j in jobs:
            ident = j.job_id or j.placeholder
            what = f"{j.stage}[{compress_indices(j.shards)}]" if j.shards else f"{j.stage} ({j.role})"
            if j.role == "service":
                what += " (service)"
            self._say(f"  {ident:>14}  {what}" + (f"  <- {j.dependency}" if j.dependency else ""))
