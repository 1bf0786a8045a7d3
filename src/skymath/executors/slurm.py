"""Slurm executor: one `sbatch --parsable` array per stage, chained by dependencies.

* Shards with a `.done` marker are skipped; shards still pending/running in the queue (from an
  earlier launch) are never submitted twice.
* Array task ids are shard indices within a window of MaxArraySize (`--array=3,17,42` for a
  resubmission); a stage with more shards than MaxArraySize is split into several arrays and
  its dependents wait on all of them. The task -> shard map is a per-launch file
  (`runs/<run>/slurm/<launch>/<stage>.p<k>.shards`, line = task id), so a resubmission never
  confuses jobs still queued from an earlier launch.
* `--dependency=afterok:<ids> --kill-on-invalid-dep=yes` between stages (parents complete
  before this launch need none); consumers of a service stage start `after:` the service job,
  and a tiny stop job (`afterany:` the consumers) writes the service's STOP file.
* Every submission is a line in `runs/<run>/jobs.jsonl`; `augment_status` turns the ledger plus
  ONE squeue and ONE sacct call into running/pending/failed states with job ids and log paths.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymath.config.cluster import ClusterProfile
from skymath.config.schema import PipelineConfig
from skymath.errors import UserError
from skymath.pipeline.dag import Pipeline
from skymath.pipeline.rundir import RunDir
from skymath.pipeline.status import StageStatus

EXECUTORS = ("slurm", "submitit")
DEFAULT_MAX_ARRAY_SIZE = 1001
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
FAILED_STATES = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


# ---- small helpers ---------------------------------------------------------------------------------
def _cmd(argv: list[str], timeout: float = 120.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]}: timed out after {timeout:.0f}s")


def compress_indices(indices: list[int]) -> str:
    """[0,1,2,5,7,8] -> '0-2,5,7-8' (Slurm --array syntax)."""
    out: list[str] = []
    xs = sorted(set(indices))
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(out)


def expand_indices(text: str) -> list[int]:
    """'0-2,5,7-9:2%4' -> [0,1,2,5,7,9] (inverse of compress_indices, with steps and throttle)."""
    text = text.split("%", 1)[0].strip("[]")
    out: list[int] = []
    for part in filter(None, text.split(",")):
        step = 1
        if ":" in part:
            part, s = part.split(":", 1)
            step = int(s)
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1, step))
        else:
            out.append(int(part))
    return out


def max_array_size(profile: ClusterProfile) -> int:
    """The profile's max_array_size, else MaxArraySize from `scontrol show config` (else 1001)."""
    if profile.max_array_size:
        return profile.max_array_size
    r = _cmd(["scontrol", "show", "config"], timeout=30)
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", r.stdout, re.M) if r.returncode == 0 else None
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY_SIZE


@dataclass
class ArrayPart:
    """One array submission: a window of shard indices [base, base + MaxArraySize)."""

    base: int
    shards: list[int]

    @property
    def tasks(self) -> list[int]:
        return [s - self.base for s in self.shards]


def split_array(shards: list[int], max_size: int) -> list[ArrayPart]:
    """Group shards into windows so every task id is < MaxArraySize (task id = shard - base)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for s in sorted(set(shards)):
        groups[(s // max_size) * max_size].append(s)
    return [ArrayPart(base, g) for base, g in sorted(groups.items())]


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
    """Every real (not dry-run) Slurm/submitit submission in the ledger, oldest first."""
    out = []
    for e in run.ledger():
        if e.get("executor") in EXECUTORS and e.get("event") == "submit" and e.get("job_id"):
            out.append(Submission(e["stage"], str(e["job_id"]), list(e.get("shards", [])),
                                  list(e.get("tasks", e.get("shards", []))), e.get("log", ""),
                                  e.get("role", "stage"), e))
    return out


def query_squeue(job_ids: set[str]) -> dict[tuple[str, int | None], tuple[str, str]]:
    """ONE squeue call: (array job id, task id or None) -> (state, reason) for our jobs in the queue."""
    if not job_ids:
        return {}
    r = _cmd(["squeue", "-h", "-r", "-o", "%F|%K|%A|%T|%r"], timeout=60)
    if r.returncode != 0:
        raise UserError(f"squeue failed: {r.stderr.strip() or r.stdout.strip()} "
                        "(is the cluster up? for the local one run `slurm/local-cluster.sh up`)")
    out: dict[tuple[str, int | None], tuple[str, str]] = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        array_id, task, job, state, reason = parts
        if array_id in job_ids:
            tid = int(task) if task.isdigit() else None
            out[(array_id, tid)] = (state, reason)
        elif job in job_ids:
            out[(job, None)] = (state, reason)
    return out


def query_sacct(job_ids: set[str]) -> dict[tuple[str, int | None], tuple[str, str, str]]:
    """ONE sacct call: (job id, task) -> (state, exit code, reason); {} without accounting."""
    if not job_ids:
        return {}
    r = _cmd(["sacct", "-n", "-P", "-X", "-j", ",".join(sorted(job_ids)),
              "-o", "JobID,State,ExitCode,Reason"], timeout=60)
    if r.returncode != 0:
        return {}
    out: dict[tuple[str, int | None], tuple[str, str, str]] = {}
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


def active_refs(run: RunDir, subs: list[Submission] | None = None) -> dict[tuple[str, int], tuple[Submission, str]]:
    """(stage, shard) -> (submission, squeue state) for shards pending or running right now."""
    subs = submissions(run) if subs is None else subs
    if not subs:
        return {}
    queue = query_squeue({s.job_id for s in subs})
    out: dict[tuple[str, int], tuple[Submission, str]] = {}
    for sub in subs:
        for shard, task in zip(sub.shards, sub.tasks, strict=False):
            st = queue.get((sub.job_id, task)) or queue.get((sub.job_id, None))
            if st and st[0] in ACTIVE_STATES:
                out[(sub.stage, shard)] = (sub, st[0])
    return out


# ---- status -----------------------------------------------------------------------------------------------
def augment_status(run: RunDir, cfg: PipelineConfig, stages: list[StageStatus]) -> None:
    """Fill in running/pending states, job ids and log paths from the ledger + squeue + sacct."""
    subs = submissions(run)
    if not subs:
        return
    ids = {s.job_id for s in subs}
    try:
        queue = query_squeue(ids)
    except UserError:
        queue = {}
    acct = query_sacct(ids)
    latest: dict[tuple[str, int], Submission] = {}
    for sub in subs:  # later submissions win
        for shard in sub.shards:
            latest[(sub.stage, shard)] = sub
    for st in stages:
        for sh in st.shards:
            if sh.state == "done":
                continue
            sub = latest.get((st.name, sh.shard))
            if sub is None:
                continue
            task = sub.task_of(sh.shard)
            ref = sub.ref(sh.shard)
            q = queue.get((sub.job_id, task)) or queue.get((sub.job_id, None))
            if q and q[0] in ACTIVE_STATES:
                sh.state = "pending" if q[0] in PENDING_STATES else "running"
                sh.job_id = ref
                sh.log = log_path(sub.log, sub.job_id, task)
                if sh.state == "pending" and q[1] not in ("None", ""):
                    sh.error = f"waiting: {q[1]}"
                continue
            a = acct.get((sub.job_id, task)) or acct.get((sub.job_id, None))
            if sh.state == "failed":
                sh.job_id = ref
                sh.log = log_path(sub.log, sub.job_id, task)
                continue
            if a is None:
                continue
            state, code, reason = a
            sh.job_id = ref
            sh.log = log_path(sub.log, sub.job_id, task)
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
@dataclass
class _Planned:
    stage: str
    part: int
    shards: list[int]
    tasks: list[int]
    array: str
    script: Path
    shard_file: Path
    log: str
    dependency: str | None
    role: str = "stage"
    job_id: str | None = None


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
    def launch(self, stages: list[str] | None = None, dry_run: bool = False) -> int:
        """Submit every selected stage that has missing shards (not already queued)."""
        selected = self._check_stages(stages) if stages else list(self.pipe.order)
        self._submit(selected, reason="launch", dry_run=dry_run)
        return 0

    def resubmit(self, stage: str | None = None) -> int:
        """Exactly the failed or missing shards (not pending/running), re-chaining dependents."""
        if stage is not None:
            self._check_stages([stage])
            selected = [stage, *self.pipe.descendants(stage)]
        else:
            selected = list(self.pipe.order)
        self._submit(selected, reason="resubmit", dry_run=False)
        return 0

    # ---- internals --------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def _check_stages(self, stages: list[str]) -> list[str]:
        for s in stages:
            if s not in self.cfg.stages:
                raise UserError(f"{self.run.config_path}: no stage {s!r} (stages: {', '.join(self.cfg.stages)})")
        return [s for s in self.pipe.order if s in stages]

    def _submit(self, selected: list[str], reason: str, dry_run: bool) -> list[_Planned]:
        launch_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2) + ("-dry" if dry_run else "")
        out_dir = self.root / "slurm" / launch_id
        subs = submissions(self.run)
        try:
            active = active_refs(self.run, subs)
        except UserError:
            if not dry_run:
                raise
            active = {}
        maxa = max_array_size(self.profile)
        planned: list[_Planned] = []
        stage_jobs: dict[str, list[str]] = {}  # stage -> dependency refs of its unfinished shards
        service_jobs: dict[str, list[str]] = {}
        services_started: list[str] = []
        consumer_refs: dict[str, list[str]] = defaultdict(list)

        def refs_of_active(stage: str) -> list[str]:
            """Dependency refs for shards of `stage` still queued from earlier launches."""
            by_job: dict[str, list[int]] = defaultdict(list)
            subs_by_job: dict[str, Submission] = {}
            for (st, shard), (sub, _state) in active.items():
                if st == stage:
                    by_job[sub.job_id].append(shard)
                    subs_by_job[sub.job_id] = sub
            refs: list[str] = []
            for job, shards in sorted(by_job.items()):
                sub = subs_by_job[job]
                if set(sub.shards) <= set(shards):
                    refs.append(job)
                else:
                    refs.extend(sub.ref(s) for s in sorted(shards))
            return refs

        for name in self.pipe.order:
            if name not in selected or self.pipe.is_service(name):
                continue
            spec = self.cfg.stages[name]
            missing = self.run.missing_shards(name, spec.num_shards)
            todo = [s for s in missing if (name, s) not in active]
            if not todo:
                if missing:
                    stage_jobs[name] = refs_of_active(name)
                    consumer_refs_for = refs_of_active(name)
                    for svc in spec.services:
                        consumer_refs[svc].extend(consumer_refs_for)
                continue
            deps: list[str] = []
            for parent in self.pipe.parents(name):
                pspec = self.cfg.stages[parent]
                if self.run.stage_complete(parent, pspec.num_shards):
                    continue
                if parent not in stage_jobs:
                    stage_jobs[parent] = refs_of_active(parent)
                    uncovered = [s for s in self.run.missing_shards(parent, pspec.num_shards)
                                 if (parent, s) not in active]
                    if uncovered:
                        raise UserError(f"stage {name} needs stage {parent!r}, whose shards {uncovered[:10]} are "
                                        f"neither done nor queued: include it (resubmit without --stage, or "
                                        f"--stage {parent})")
                deps.extend(f"afterok:{r}" for r in stage_jobs[parent])
            after: list[str] = []
            for svc in spec.services:
                if svc not in service_jobs:
                    refs = refs_of_active(svc)
                    if not refs:
                        refs = self._plan_service(svc, out_dir, planned, dry_run, launch_id, reason)
                        services_started.append(svc)
                    service_jobs[svc] = refs
                after.extend(f"after:{r}" for r in service_jobs[svc])
            dependency = _dependency(deps, after)
            parts = split_array(todo, maxa)
            refs_now: list[str] = []
            for k, part in enumerate(parts):
                p = self._plan(name, k, part, out_dir, dependency)
                self._do(p, dry_run, launch_id, reason)
                planned.append(p)
                refs_now.append(p.job_id or f"<{name}.p{k}>")
            stage_jobs[name] = refs_now + refs_of_active(name)
            for svc in spec.services:
                consumer_refs[svc].extend(stage_jobs[name])

        for svc in services_started:
            self._plan_stop(svc, service_jobs[svc], consumer_refs[svc], out_dir, planned, dry_run, launch_id, reason)

        self.run.append_ledger({"event": reason, "executor": "slurm", "launch": launch_id, "dry_run": dry_run,
                                "stages": [p.stage for p in planned if p.role == "stage"],
                                "jobs": [p.job_id for p in planned if p.job_id]})
        self._report(planned, dry_run, out_dir, reason)
        return planned

    def _log_pattern(self, stage: str) -> str:
        d = self.root / "logs" / stage
        d.mkdir(parents=True, exist_ok=True)
        return str(d / "%A_%a.out")

    def _write(self, path: Path, text: str, mode: int = 0o644) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def _plan(self, stage: str, k: int, part: ArrayPart, out_dir: Path, dependency: str | None,
              role: str = "stage") -> _Planned:
        from skymath.executors.render import job_spec, render_script

        spec = self.cfg.stages[stage]
        shard_file = out_dir / f"{stage}.p{k}.shards"
        # line t holds the shard of array task t (task ids are shard - base)
        lines = [str(part.base + t) for t in range(max(part.tasks) + 1)]
        self._write(shard_file, "\n".join(lines) + "\n")
        array = compress_indices(part.tasks)
        if spec.resources.array_throttle:
            array += f"%{spec.resources.array_throttle}"
        log = self._log_pattern(stage)
        js = job_spec(self.profile, spec, stage=stage, run_dir=self.root, job_name=f"{self.run.root.name}.{stage}",
                      output=log, worker_argv_tail=[str(self.root), stage, f"@{shard_file}"], array=array,
                      chdir=Path.cwd(), python=self.python, data_root=str(self.cfg.data.root),
                      api_key_env=self.cfg.llm.api_key_env)
        script = out_dir / f"{stage}.p{k}.sh"
        self._write(script, render_script(js), 0o755)
        return _Planned(stage, k, part.shards, part.tasks, array, script, shard_file, log, dependency, role)

    def _plan_service(self, svc: str, out_dir: Path, planned: list[_Planned], dry_run: bool,
                      launch_id: str, reason: str) -> list[str]:
        spec = self.cfg.stages[svc]
        stop = self.run.service_dir(svc) / "STOP"
        if not dry_run:
            stop.unlink(missing_ok=True)
        refs = []
        for k, part in enumerate(split_array(list(range(spec.num_shards)), max_array_size(self.profile))):
            p = self._plan(svc, k, part, out_dir, None, role="service")
            self._do(p, dry_run, launch_id, reason)
            planned.append(p)
            refs.append(p.job_id or f"<{svc}.p{k}>")
        return refs

    def _plan_stop(self, svc: str, svc_refs: list[str], consumers: list[str], out_dir: Path,
                   planned: list[_Planned], dry_run: bool, launch_id: str, reason: str) -> None:
        from skymath.executors.render import render_stop_job

        d = self.root / "logs" / svc
        d.mkdir(parents=True, exist_ok=True)
        log = str(d / "stop-%j.out")
        text = render_stop_job(self.profile, run_dir=self.root, service=svc, service_job=",".join(svc_refs),
                               stop_file=self.run.service_dir(svc).resolve() / "STOP", output=log,
                               chdir=Path.cwd(), job_name=f"{self.run.root.name}.{svc}.stop")
        script = out_dir / f"{svc}.stop.sh"
        self._write(script, text, 0o755)
        dep = "afterany:" + ":".join(consumers) if consumers else None
        p = _Planned(svc, 0, [], [], "", script, script, log, dep, role="stop-service")
        self._do(p, dry_run, launch_id, reason, kill_on_invalid=False)
        planned.append(p)

    def sbatch_argv(self, p: _Planned, kill_on_invalid: bool = True) -> list[str]:
        argv = ["sbatch", "--parsable"]
        if p.dependency:
            argv.append(f"--dependency={p.dependency}")
            if kill_on_invalid:
                argv.append("--kill-on-invalid-dep=yes")
        argv.append(str(p.script))
        return argv

    def _do(self, p: _Planned, dry_run: bool, launch_id: str, reason: str, kill_on_invalid: bool = True) -> None:
        argv = self.sbatch_argv(p, kill_on_invalid)
        if dry_run:
            self._say("$ " + shlex.join(argv))
            return
        r = _cmd(argv, env=self.env)
        if r.returncode != 0:
            raise UserError(f"sbatch for stage {p.stage} failed: {(r.stderr or r.stdout).strip()} (script {p.script})")
        p.job_id = r.stdout.strip().split(";")[0]
        entry = {"event": "submit", "executor": "slurm", "launch": launch_id, "reason": reason, "role": p.role,
                 "stage": p.stage, "job_id": p.job_id, "shards": p.shards, "tasks": p.tasks,
                 "array": p.array or False, "script": str(p.script), "shard_file": str(p.shard_file),
                 "log": p.log, "dependency": p.dependency, "sbatch": argv}
        self.run.append_ledger(entry)
        self._say(f"submitted {p.stage}" + (f" ({p.role})" if p.role != "stage" else "")
                  + (f" shards {compress_indices(p.shards)}" if p.shards else "")
                  + f" as job {p.job_id}" + (f" after {p.dependency}" if p.dependency else ""))

    def _report(self, planned: list[_Planned], dry_run: bool, out_dir: Path, reason: str) -> None:
        if not planned:
            self._say(f"nothing to {reason}: every selected shard is done or already queued")
            return
        if dry_run:
            self._say(f"\nrendered {len(planned)} script(s) into {out_dir}")
        self._say("dependency graph:")
        for p in planned:
            ident = p.job_id or f"<{p.stage}.p{p.part}>"
            what = f"{p.stage}[{compress_indices(p.shards)}]" if p.shards else f"{p.stage} ({p.role})"
            self._say(f"  {ident:>14}  {what}" + (f"  <- {p.dependency}" if p.dependency else ""))


def _dependency(afterok: list[str], after: list[str]) -> str | None:
    """'afterok:1:2,after:3' (all must hold)."""
    parts = []
    ok = [d.split(":", 1)[1] for d in afterok]
    if ok:
        parts.append("afterok:" + ":".join(ok))
    started = [d.split(":", 1)[1] for d in after]
    if started:
        parts.append("after:" + ":".join(started))
    return ",".join(parts) or None
