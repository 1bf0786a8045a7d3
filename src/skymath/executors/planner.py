"""The ONE submission planner: which shards, which arrays, which dependencies, which service
start/stop jobs. A pure function of the stage DAG, the `.done` markers and what is still queued,
so `--dry-run`, `skymath check` (sbatch --test-only on the rendered scripts) and a real launch
all see the same plan; the executor only renders and hands each planned job to the scheduler.

Rules (each one a defect we had, see issue 12):
* A shard that is done or still queued from an earlier launch is never planned again; an array
  larger than MaxArraySize is split into windows whose task ids are `shard - base`.
* A stage waits `afterok` on the unfinished shards of its parents (planned now or still queued).
* A service stage (e.g. `llm-server`) waits on its consumers' parents, so a GPU server does not
  idle while they run: `afterok` on all of them when every consumer has the same parents (one
  consumer: exactly its parents), else `afterok:a?afterok:b` (any), since Slurm cannot express
  "all parents of some consumer". Consumers start `after:` the service.
* Every consumer submission is covered by a stop job (`afterany` on all consumers of the service
  still queued). Reusing a queued service replaces its pending stop job with one that also covers
  the new consumers; a service whose stop job already runs is not reused (it is stopping).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymath.errors import UserError

# a dependency target: an int is the index of a job planned in this launch, a str is a Slurm
# job reference already queued (`1234` or `1234_7`)
Ref = int | str


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


@dataclass
class QueuedJob:
    """A submission of an earlier launch that is still pending or running (from the ledger + squeue)."""

    stage: str
    job_id: str
    role: str  # stage | service | stop-service
    shards: list[int]
    tasks: list[int]
    active_shards: list[int]  # the shards of this job still in the queue
    array: bool = True
    state: str = "PENDING"  # for stop jobs: PENDING or RUNNING

    def ref(self, shard: int) -> str:
        if not self.array or shard not in self.shards:
            return self.job_id
        return f"{self.job_id}_{self.tasks[self.shards.index(shard)]}"

    def refs(self) -> list[str]:
        """The whole job when all its shards are queued, else one `job_task` per queued shard."""
        if set(self.shards) <= set(self.active_shards):
            return [self.job_id]
        return [self.ref(s) for s in sorted(self.active_shards)]


@dataclass
class PlannedJob:
    """One job this launch would submit. `script` is the rendered sbatch script (its #SBATCH
    lines are the exact options); `dependency` the --dependency value (`<stage.pK>` stands for a
    job of this launch until it is submitted, then the real id)."""

    stage: str
    role: str  # "stage" | "service" | "stop-service"
    part: int
    shards: list[int]
    tasks: list[int]
    base: int = 0
    array: str = ""  # the --array value ('' for a plain job)
    deps: list[tuple[str, list[Ref]]] = field(default_factory=list)  # [(afterok|after|afterany, refs)]
    any_dep: bool = False  # join the deps with '?' (any) instead of ',' (all)
    kill_on_invalid: bool = True
    service_refs: list[Ref] = field(default_factory=list)  # stop jobs: the service jobs to stop
    replaces: list[str] = field(default_factory=list)  # stop jobs superseded (scancelled once queued)
    script: Path | None = None
    shard_file: Path | None = None
    log: str = ""
    job_id: str | None = None
    dependency: str | None = None

    @property
    def key(self) -> str:
        return f"{self.stage}.stop" if self.role == "stop-service" else f"{self.stage}.p{self.part}"

    @property
    def placeholder(self) -> str:
        return f"<{self.key}>"


def resolve_ref(ref: Ref, jobs: list[PlannedJob]) -> str:
    """A Slurm job reference: the real id once the planned job is submitted, else `<stage.pK>`."""
    if isinstance(ref, int):
        j = jobs[ref]
        return j.job_id or j.placeholder
    return ref


def dependency_string(job: PlannedJob, jobs: list[PlannedJob]) -> str | None:
    """'afterok:1:2,after:3' (all) or 'afterok:1?afterok:2' (any); None without dependencies."""
    if job.any_dep:
        parts = [f"{kind}:{resolve_ref(r, jobs)}" for kind, refs in job.deps for r in refs]
        return "?".join(parts) or None
    parts = [f"{kind}:" + ":".join(resolve_ref(r, jobs) for r in refs) for kind, refs in job.deps if refs]
    return ",".join(parts) or None


@dataclass
class PlanInput:
    """Everything the plan depends on (no I/O in the planner itself)."""

    order: list[str]  # stages in topological order
    num_shards: Mapping[str, int]
    parents: Mapping[str, list[str]]
    services: Mapping[str, list[str]]  # stage -> the service stages it uses
    is_service: Callable[[str], bool]
    done: Mapping[str, set[int]]  # stage -> shards with a .done marker
    queued: list[QueuedJob]  # submissions of earlier launches still pending/running
    max_array_size: int
    throttle: Mapping[str, int | None] = field(default_factory=dict)


class _Planner:
    def __init__(self, inp: PlanInput) -> None:
        self.inp = inp
        self.jobs: list[PlannedJob] = []
        self.stage_refs: dict[str, list[Ref]] = {}  # stage -> refs of its unfinished shards
        self.service_refs: dict[str, list[Ref]] = {}
        self.new_services: list[str] = []
        self.replaced_stops: dict[str, list[str]] = defaultdict(list)
        self.consumer_refs: dict[str, list[Ref]] = defaultdict(list)
        self.consumer_parent_refs: dict[str, list[list[Ref]]] = defaultdict(list)
        self.service_index: dict[str, int] = {}
        self.queued_by_stage: dict[str, list[QueuedJob]] = defaultdict(list)
        self.active: set[tuple[str, int]] = set()
        for q in inp.queued:
            self.queued_by_stage[q.stage].append(q)
            if q.role != "stop-service":
                self.active.update((q.stage, s) for s in q.active_shards)

    # ---- helpers ----------------------------------------------------------------------------
    def missing(self, stage: str) -> list[int]:
        done = self.inp.done.get(stage, set())
        return [s for s in range(self.inp.num_shards[stage]) if s not in done]

    def queued_refs(self, stage: str) -> list[Ref]:
        refs: list[Ref] = []
        for q in sorted(self.queued_by_stage.get(stage, []), key=lambda q: q.job_id):
            if q.role != "stop-service" and q.active_shards:
                refs.extend(q.refs())
        return refs

    def add(self, job: PlannedJob) -> int:
        self.jobs.append(job)
        return len(self.jobs) - 1

    def add_arrays(self, stage: str, shards: list[int], role: str, deps: list[tuple[str, list[Ref]]]) -> list[Ref]:
        refs: list[Ref] = []
        for k, part in enumerate(split_array(shards, self.inp.max_array_size)):
            array = compress_indices(part.tasks)
            throttle = self.inp.throttle.get(stage)
            if throttle:
                array += f"%{throttle}"
            refs.append(self.add(PlannedJob(stage, role, k, part.shards, part.tasks, part.base, array,
                                            [(kind, list(r)) for kind, r in deps])))
        return refs

    # ---- the plan ---------------------------------------------------------------------------
    def parent_refs(self, name: str) -> list[Ref]:
        out: list[Ref] = []
        for parent in self.inp.parents[name]:
            if not self.missing(parent):
                continue
            if parent not in self.stage_refs:
                self.stage_refs[parent] = self.queued_refs(parent)
                uncovered = [s for s in self.missing(parent) if (parent, s) not in self.active]
                if uncovered:
                    raise UserError(f"stage {name} needs stage {parent!r}, whose shards {uncovered[:10]} are "
                                    f"neither done nor queued: include it (resubmit without --stage, or "
                                    f"--stage {parent})")
            out.extend(self.stage_refs[parent])
        return out

    def use_service(self, svc: str) -> list[Ref]:
        if svc in self.service_refs:
            return self.service_refs[svc]
        running = self.queued_refs(svc)
        stops = [q for q in self.queued_by_stage.get(svc, []) if q.role == "stop-service"]
        if running and all(q.state in ("PENDING", "REQUEUED") for q in stops):
            self.service_refs[svc] = running  # reuse: its pending stop job is replaced below
            self.replaced_stops[svc] = [q.job_id for q in stops]
        else:
            self.service_index[svc] = len(self.jobs)
            self.service_refs[svc] = self.add_arrays(svc, list(range(self.inp.num_shards[svc])), "service", [])
        self.new_services.append(svc)
        return self.service_refs[svc]

    def queued_consumer_refs(self, svc: str) -> list[Ref]:
        refs: list[Ref] = []
        for name in self.inp.order:
            if svc in self.inp.services.get(name, []):
                refs.extend(self.queued_refs(name))
        return refs

    def plan_stage(self, name: str) -> None:
        missing = self.missing(name)
        todo = [s for s in missing if (name, s) not in self.active]
        if not todo:
            if missing:
                self.stage_refs[name] = self.queued_refs(name)
            return
        parents = self.parent_refs(name)
        after: list[Ref] = []
        for svc in self.inp.services.get(name, []):
            after.extend(self.use_service(svc))
        deps = [("afterok", parents), ("after", after)]
        refs = self.add_arrays(name, todo, "stage", [d for d in deps if d[1]])
        self.stage_refs[name] = refs + self.queued_refs(name)
        for svc in self.inp.services.get(name, []):
            self.consumer_refs[svc].extend(self.stage_refs[name])
            self.consumer_parent_refs[svc].append(parents)

    def service_dependencies(self, svc: str) -> None:
        """A new service waits on its consumers' parents (see the module docstring)."""
        if svc not in self.service_index:
            return
        first = self.service_index[svc]
        groups = self.consumer_parent_refs[svc]
        if not groups or any(not g for g in groups):
            return  # some consumer is ready now: start the service now
        # only refs submitted before the service can be named (Slurm needs their ids)
        placed = [[r for r in g if not isinstance(r, int) or r < first] for g in groups]
        if all(set(g) == set(placed[0]) for g in placed):
            deps: list[tuple[str, list[Ref]]] = [("afterok", placed[0])] if placed[0] else []
            any_dep = False
        else:
            union: list[Ref] = []
            for g in placed:
                union.extend(r for r in g if r not in union)
            deps, any_dep = [("afterok", union)], True
        for job in self.jobs:
            if job.stage == svc and job.role == "service":
                job.deps, job.any_dep = [d for d in deps if d[1]], any_dep

    def stop_job(self, svc: str) -> None:
        # this launch's consumers and every consumer still queued from earlier launches
        consumers = list(dict.fromkeys([*self.consumer_refs[svc], *self.queued_consumer_refs(svc)]))
        self.add(PlannedJob(svc, "stop-service", 0, [], [], deps=[("afterany", consumers)] if consumers else [],
                            kill_on_invalid=False, service_refs=list(self.service_refs[svc]),
                            replaces=self.replaced_stops.get(svc, [])))

    def run(self, selected: list[str]) -> list[PlannedJob]:
        for name in self.inp.order:
            if name in selected and not self.inp.is_service(name):
                self.plan_stage(name)
        for svc in self.new_services:
            self.service_dependencies(svc)
            self.stop_job(svc)
        for job in self.jobs:
            job.dependency = dependency_string(job, self.jobs)
        return self.jobs


def plan_jobs(inp: PlanInput, selected: list[str]) -> list[PlannedJob]:
    """The jobs to submit, in submission order (every dependency names an earlier job)."""
    return _Planner(inp).run(selected)


def plan_summary(jobs: list[PlannedJob]) -> list[dict[str, Any]]:
    """A JSON-able view of a plan (for golden tests and `--dry-run` output)."""
    return [{"key": j.key, "role": j.role, "shards": compress_indices(j.shards), "array": j.array,
             "dependency": j.dependency} for j in jobs]
