"""The same stages submitted through submitit's AutoExecutor (for users who prefer Python).

One `map_array` per stage (an sbatch array), tasks run the ONE worker entry point in a
subprocess (so the worker's own SIGTERM/SIGUSR2 handling is untouched), the same markers and
RunDir; dependencies via `afterok` + `--kill-on-invalid-dep=yes`; every submission goes into
jobs.jsonl (executor "submitit"), so `skymath status` / `resubmit` work as for sbatch.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from skymath.config.cluster import ClusterProfile
from skymath.config.schema import PipelineConfig
from skymath.errors import UserError
from skymath.executors.render import clamp_time, time_seconds
from skymath.executors.slurm import active_refs, compress_indices, max_array_size, submissions
from skymath.pipeline.dag import Pipeline
from skymath.pipeline.rundir import RunDir


def run_worker(python: str, run_dir: str, stage: str, shard: int) -> int:
    """The submitit task: `python -m skymath.worker RUN STAGE SHARD`; a failure fails the task."""
    rc = subprocess.call([python, "-m", "skymath.worker", run_dir, stage, str(shard)])
    if rc != 0:
        raise RuntimeError(f"{stage}[{shard}] failed with exit code {rc} (see the .failed marker)")
    return rc


class SubmititExecutor:
    def __init__(self, run: RunDir, cfg: PipelineConfig, profile: ClusterProfile,
                 python: str | None = None, quiet: bool = False) -> None:
        self.run = run
        self.cfg = cfg
        self.profile = profile
        self.pipe = Pipeline.from_config(cfg)
        self.python = python or profile.python or sys.executable
        self.quiet = quiet
        self.root = Path(run.root).resolve()

    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def launch(self, stages: list[str] | None = None, dry_run: bool = False) -> int:
        selected = [s for s in self.pipe.order if not stages or s in stages]
        for s in stages or []:
            if s not in self.cfg.stages:
                raise UserError(f"{self.run.config_path}: no stage {s!r}")
        return self._submit(selected, "launch", dry_run)

    def resubmit(self, stage: str | None = None) -> int:
        selected = [stage, *self.pipe.descendants(stage)] if stage else list(self.pipe.order)
        return self._submit(selected, "resubmit", False)

    def _executor(self, stage: str, folder: Path, n: int, dependency: str | None):
        import submitit

        spec = self.cfg.stages[stage]
        shape = spec.shape or "cpu-single"
        res = spec.resources
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        extra: dict = {"open-mode": "append", "chdir": str(Path.cwd())}
        if dependency:
            extra.update({"dependency": dependency, "kill-on-invalid-dep": "yes"})
        if self.profile.account:
            extra["account"] = self.profile.account
        if self.profile.qos:
            extra["qos"] = self.profile.qos
        params: dict = dict(
            name=f"{self.run.root.name}.{stage}", cpus_per_task=res.cpus, mem_gb=res.mem_gb,
            timeout_min=max(1, time_seconds(clamp_time(res.time, self.profile.time_limit_for(shape))) // 60),
            nodes=1, tasks_per_node=1, slurm_array_parallelism=min(n, res.array_throttle or n),
            slurm_additional_parameters=extra,
            slurm_setup=[*(f"module load {m}" for m in self.profile.modules), *self.profile.setup],
        )
        partition = res.partition or self.profile.partition_for(shape)
        if partition:
            params["slurm_partition"] = partition
        if shape.startswith("gpu") and self.profile.gpu_gres:
            params["gpus_per_node"] = res.gpus or 1
        ex.update_parameters(**params)
        return ex

    def _submit(self, selected: list[str], reason: str, dry_run: bool) -> int:
        launch_id = time.strftime("%Y%m%d-%H%M%S") + "-submitit"
        active = active_refs(self.run, submissions(self.run)) if not dry_run else {}
        maxa = max_array_size(self.profile)
        jobs: dict[str, list[str]] = {}
        for name in selected:
            if self.pipe.is_service(name):
                raise UserError(f"stage {name}: service stages need the sbatch executor (--executor slurm)")
            spec = self.cfg.stages[name]
            todo = [s for s in self.run.missing_shards(name, spec.num_shards) if (name, s) not in active]
            if not todo:
                continue
            if len(todo) > maxa:
                raise UserError(f"stage {name}: {len(todo)} shards exceed MaxArraySize {maxa}; use --executor slurm")
            deps = []
            for parent in self.pipe.parents(name):
                if self.run.stage_complete(parent, self.cfg.stages[parent].num_shards):
                    continue
                pj = jobs.get(parent) or sorted({sub.job_id for (st, _), (sub, _) in active.items() if st == parent})
                if not pj:
                    raise UserError(f"stage {name} needs stage {parent!r}, which is neither done nor queued")
                deps += pj
            dependency = "afterok:" + ":".join(deps) if deps else None
            folder = self.root / "slurm" / launch_id / f"submitit-{name}"
            if dry_run:
                self._say(f"would submit {name}[{compress_indices(todo)}] via submitit"
                          + (f" after {dependency}" if dependency else ""))
                jobs[name] = [f"<{name}>"]
                continue
            ex = self._executor(name, folder, len(todo), dependency)
            n = len(todo)
            sub_jobs = ex.map_array(run_worker, [self.python] * n, [str(self.root)] * n, [name] * n, todo)
            array_id = str(sub_jobs[0].job_id).split("_")[0]
            jobs[name] = [array_id]
            self.run.append_ledger({
                "event": "submit", "executor": "submitit", "launch": launch_id, "reason": reason, "role": "stage",
                "stage": name, "job_id": array_id, "shards": todo, "tasks": list(range(n)),
                "array": f"0-{n - 1}", "script": str(folder / f"{array_id}_submission.sh"),
                "log": str(folder / "%A_%a_0_log.err"), "dependency": dependency,
            })
            self._say(f"submitted {name}[{compress_indices(todo)}] via submitit as job {array_id}"
                      + (f" after {dependency}" if dependency else ""))
        self.run.append_ledger({"event": reason, "executor": "submitit", "launch": launch_id, "dry_run": dry_run,
                                "stages": list(jobs)})
        if not jobs:
            self._say(f"nothing to {reason}: every selected shard is done or already queued")
        return 0

