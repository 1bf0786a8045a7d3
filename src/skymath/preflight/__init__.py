"""`skymath check`: everything that would make a submission fail after its time in the queue,
found before anything is queued, as ONE table of (stage, problem, fix).

One module per class of problem, each a function of the config, the cluster profile, the jobs
the planner would submit (their rendered scripts) and the cluster's own answers:
    resources  each job's #SBATCH options vs. partitions/nodes/accounts/QOS, and sbatch --test-only
    signals    a stopping step (synthesis grace) fits in the profile's signal lead
    limits     MaxArraySize, MaxSubmitJobs / QOS submit limits
    apikey     llm.api_key_env set and passed into containers; --ping the endpoints
    images     a readable container image per job shape
    inputs     seed/benchmark files, model dirs, HF repos when the compute nodes are offline
    batch      SFT global batch vs. the ranks the job really starts
    disk       run root writable, outputs + checkpoints vs. free space
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymath.errors import UserError
from skymath.preflight.problems import Findings, Problem, merged

KIND_ORDER = ("cluster", "limits", "secrets", "images", "inputs", "sft", "disk")


@dataclass
class CheckResult:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    jobs: int = 0  # sbatch submissions planned
    tasks: int = 0  # array tasks in them
    accepted: int = 0  # scripts `sbatch --test-only` accepted

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}


def _repaired_for_planning(cfg: Any, profile: Any, f: Findings) -> tuple[Any, Any]:
    """Copies of config and profile with the problems found so far patched, so that planning (and
    sbatch --test-only of every other job) still runs: a time above the profile's limit is reported
    here and lowered in the copy; a shape without an image gets a placeholder (reported by images)."""
    from skymath.executors.render import site_options, time_seconds

    cfg2 = cfg.model_copy(deep=True)
    prof2 = profile.model_copy(deep=True)
    for name, spec in cfg2.stages.items():
        shape = spec.shape or "cpu-single"
        site = site_options(prof2, shape, spec.resources, name)
        try:
            over = site.time_limit and time_seconds(spec.resources.time) > time_seconds(site.time_limit)
        except UserError as e:
            f.add("cluster", name, str(e), f"fix stages.{name}.resources.time")
            spec.resources.time = "01:00:00"
            continue
        if over:
            key = site.keys.get("time_limit", "time_limits")
            f.add("cluster", name, f"resources.time {spec.resources.time} is above the profile's time limit "
                  f"{site.time_limit} ({key}); it would be refused, never silently cut",
                  f"lower stages.{name}.resources.time to at most {site.time_limit} (a stopped job checkpoints and "
                  f"requeues), or raise {key} if the partition allows it")
            spec.resources.time = site.time_limit
    c = prof2.container
    if c.runtime != "none":
        for spec in cfg2.stages.values():
            shape = spec.shape or "cpu-single"
            if not c.image_for(shape):
                c.images[shape] = f"/nonexistent/skymath-{shape}.sif"
    return cfg2, prof2


def _plan(cfg: Any, profile: Any, run_dir: Path, stages: list[str] | None) -> tuple[list, Path | None]:
    """The jobs a launch would submit (rendered into a scratch dir that is removed afterwards)."""
    from skymath.executors.slurm import SlurmExecutor
    from skymath.pipeline.rundir import RunDir

    tmp: Path | None = None
    if (run_dir / "config.yaml").exists():
        run = RunDir(run_dir)
    else:  # plan in a scratch run dir of the same name: nothing is left behind
        tmp = Path(tempfile.mkdtemp(prefix="skymath-check-"))
        run = RunDir(tmp / run_dir.name)
        run.root.mkdir(parents=True)
    ex = SlurmExecutor(run, cfg, profile, quiet=True)
    return ex.plan(stages), tmp


def run_preflight(cfg: Any, profile: Any, run_dir: Path, *, ping: bool = False, env: dict[str, str] | None = None,
                  stages: list[str] | None = None) -> CheckResult:
    """Every check; never submits anything. `run_dir` is runs/<name> (it need not exist)."""
    from skymath.preflight.apikey import check_api_key
    from skymath.preflight.apikey import ping as ping_endpoints
    from skymath.preflight.batch import check_sft_batch
    from skymath.preflight.disk import check_disk
    from skymath.preflight.facts import ClusterFacts
    from skymath.preflight.images import check_images
    from skymath.preflight.inputs import check_inputs
    from skymath.preflight.jobs import requests_from_plan
    from skymath.preflight.limits import check_limits
    from skymath.preflight.resources import check_resources, check_test_only
    from skymath.preflight.signals import check_signal_lead

    env = dict(os.environ if env is None else env)
    f = Findings()
    res = CheckResult()
    facts = ClusterFacts()
    if not facts.reachable:
        f.add("cluster", "-", f"the Slurm cluster does not answer ({facts.errors.get('config', 'scontrol failed')})",
              "run check on a login node of the cluster (local cluster: `slurm/local-cluster.sh up`)")
    cfg2, prof2 = _repaired_for_planning(cfg, profile, f)
    jobs = []
    tmp = None
    try:
        planned, tmp = _plan(cfg2, prof2, Path(run_dir), stages)
        jobs = requests_from_plan(planned)
        res.jobs, res.tasks = len(jobs), sum(j.tasks for j in jobs)
        if facts.reachable and jobs:
            found = check_resources(jobs, facts, cfg2, prof2)
            f.extend(found)
            explained = {p.stage for p in found.problems}
            only, res.accepted = check_test_only(jobs, explained)
            f.extend(only)
            f.extend(check_limits(jobs, facts, profile.max_array_size))
        f.extend(check_api_key(cfg, profile, jobs, env))
    except UserError as e:
        f.add("cluster", "-", f"the jobs cannot be rendered: {e}", "fix the value it names, then check again")
    finally:
        for j in jobs:  # the rendered scripts of a real run dir go too: check submits nothing
            if j.script.parent.name.endswith("-dry"):
                shutil.rmtree(j.script.parent, ignore_errors=True)
                break
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    f.extend(check_images(cfg, profile))
    f.extend(check_inputs(cfg, profile, env))
    f.extend(check_sft_batch(cfg, profile))
    f.extend(check_signal_lead(cfg, profile))
    f.extend(check_disk(cfg, Path(run_dir)))
    if ping:
        f.extend(ping_endpoints(cfg, env))
    res.problems = sorted(merged(f.problems), key=lambda p: (KIND_ORDER.index(p.kind) if p.kind in KIND_ORDER else 99))
    res.notes = f.notes
    return res


def format_table(res: CheckResult, title: str, width: int | None = None) -> str:
    """The one table (stage, problem, fix) as text (as wide as the terminal, at most 160)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=True)
    table.add_column("stage", overflow="fold", max_width=24)
    table.add_column("problem", overflow="fold")
    table.add_column("fix", overflow="fold")
    for p in res.problems:
        table.add_row(p.stage, p.problem, p.fix)
    width = width or min(160, shutil.get_terminal_size((140, 24)).columns)
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()
