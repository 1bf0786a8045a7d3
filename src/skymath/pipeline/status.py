"""Status of a run derived from the run directory's markers (executors may add job states)."""

from __future__ import annotations

from dataclasses import dataclass, field

from skymath.config.schema import PipelineConfig
from skymath.pipeline.dag import Pipeline
from skymath.pipeline.rundir import RunDir

STATES = ("done", "running", "pending", "failed", "missing")


@dataclass
class ShardState:
    shard: int
    state: str  # one of STATES
    job_id: str | None = None
    log: str | None = None
    error: str | None = None


@dataclass
class StageStatus:
    name: str
    kind: str
    shape: str
    num_shards: int
    service: bool = False
    shards: list[ShardState] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for s in self.shards if s.state == state)

    def indices(self, state: str) -> list[int]:
        return [s.shard for s in self.shards if s.state == state]

    @property
    def complete(self) -> bool:
        return self.count("done") == self.num_shards


def collect_status(run: RunDir, cfg: PipelineConfig) -> list[StageStatus]:
    pipe = Pipeline.from_config(cfg)
    out = []
    for name in pipe.order:
        spec = cfg.stages[name]
        st = StageStatus(name, spec.kind, spec.shape or "", spec.num_shards, service=pipe.is_service(name))
        for i in range(spec.num_shards):
            if run.is_done(name, i):
                st.shards.append(ShardState(i, "done"))
                continue
            failed = run.read_marker(run.failed_path(name, i))
            if failed:
                st.shards.append(ShardState(i, "failed", job_id=failed.get("SLURM_JOB_ID"), error=failed.get("error")))
            else:
                st.shards.append(ShardState(i, "missing"))
        out.append(st)
    return out


def render_status(stages: list[StageStatus]) -> None:
    """Print the status table (rich) plus the error and log of each failed shard."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    table = Table(title="skymath status")
    for col in ("stage", "kind", "shape", "shards", "done", "running", "pending", "failed", "missing"):
        table.add_column(col, justify="right" if col not in ("stage", "kind", "shape") else "left")
    for st in stages:
        if st.service:
            table.add_row(st.name, st.kind, st.shape, str(st.num_shards), "-", str(st.count("running")),
                          str(st.count("pending")), "-", "(service)")
            continue
        table.add_row(st.name, st.kind, st.shape, str(st.num_shards),
                      *(str(st.count(s)) for s in ("done", "running", "pending", "failed", "missing")))
    console.print(table)
    for st in stages:
        for sh in st.shards:
            if sh.state == "failed":
                where = f" job {sh.job_id}" if sh.job_id else ""
                log = f" log {sh.log}" if sh.log else ""
                console.print(f"[red]failed[/red] {st.name}[{sh.shard}]{where}{log}: {sh.error or ''}", highlight=False)
