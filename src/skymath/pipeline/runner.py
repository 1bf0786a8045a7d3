"""What the CLI's run/plan/status/resubmit do, over config + run directory + executors."""

from __future__ import annotations

import time
from pathlib import Path

from skymath.config import PipelineConfig, dump_config, load_config
from skymath.errors import UserError
from skymath.pipeline.dag import Pipeline
from skymath.pipeline.rundir import RunDir
from skymath.pipeline.status import StageStatus, collect_status


def prepare_run(config_path: str | Path, overrides: list[str] | None = None,
                reconfigure: bool = False, executor: str | None = None) -> tuple[RunDir, PipelineConfig]:
    """Load + validate, make paths absolute, freeze the config into runs/<name>/config.yaml."""
    cfg = load_config(config_path, overrides)
    if executor:
        cfg.executor.kind = executor  # type: ignore[assignment]
    cfg.run.root = Path(cfg.run.root).resolve()
    cfg.data.root = Path(cfg.data.root).resolve()
    run = RunDir(cfg.run_dir)
    run.freeze_config(dump_config(_without_executor(cfg)), reconfigure=reconfigure)
    return run, cfg


def _without_executor(cfg: PipelineConfig) -> PipelineConfig:
    """The frozen config does not depend on how it is executed (local first, resubmit on Slurm)."""
    c = cfg.model_copy(deep=True)
    c.executor = type(cfg.executor)()
    return c


def open_run(run_dir: str | Path) -> tuple[RunDir, PipelineConfig]:
    run = RunDir(run_dir)
    return run, run.load_config()


def ledger_executor(run: RunDir) -> str:
    """The executor that launched this run last (from jobs.jsonl); local when nothing says else."""
    for entry in reversed(run.ledger()):
        if entry.get("executor") in ("slurm", "submitit", "local"):
            return entry["executor"]
    return "local"


def status(run: RunDir, cfg: PipelineConfig) -> list[StageStatus]:
    stages = collect_status(run, cfg)
    if any(e.get("executor") in ("slurm", "submitit") for e in run.ledger()):
        from skymath.executors.slurm import augment_status

        augment_status(run, cfg, stages)
    return stages


def wait(run: RunDir, cfg: PipelineConfig, poll_s: float = 5.0, timeout_s: float | None = None) -> list[StageStatus]:
    """Block until no shard of the run is running or pending on the cluster."""
    t0 = time.monotonic()
    last = ""
    while True:
        st = status(run, cfg)
        summary = " ".join(f"{s.name}:{s.count('done')}/{s.num_shards}" for s in st if not s.service)
        if summary != last:
            print(f"[{time.strftime('%H:%M:%S')}] {summary}", flush=True)
            last = summary
        if not any(s.count("running") or s.count("pending") for s in st):
            return st
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise UserError(f"{run.root}: still running after {timeout_s:.0f}s")
        time.sleep(poll_s)


def plan_rows(cfg: PipelineConfig) -> list[dict[str, str]]:
    pipe = Pipeline.from_config(cfg)
    rows = []
    for name in pipe.order:
        s = cfg.stages[name]
        r = s.resources
        res = f"{r.cpus} cpu, {r.mem_gb:g} GB"
        if r.gpus:
            res += f", {r.gpus} gpu"
        if s.shape == "gpu-multinode":
            res += f" x {r.nodes} node(s)"
        rows.append({"stage": name, "kind": s.kind, "shape": s.shape or "", "shards": str(s.num_shards),
                     "depends_on": ", ".join(s.depends_on) or "-", "services": ", ".join(s.services) or "-",
                     "resources": res, "time": r.time})
    return rows
