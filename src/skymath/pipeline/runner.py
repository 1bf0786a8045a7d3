"""What the CLI's run/plan/status/resubmit do, over config + run directory + executors."""

from __future__ import annotations

from pathlib import Path

from skymath.config import PipelineConfig, dump_config, load_config
from skymath.errors import UserError
from skymath.pipeline.dag import Pipeline
from skymath.pipeline.rundir import RunDir
from skymath.pipeline.status import StageStatus, StatusCache, collect_status


def prepare_run(config_path: str | Path, overrides: list[str] | None = None,
                reconfigure: bool = False, executor: str | None = None,
                freeze: bool = True) -> tuple[RunDir, PipelineConfig]:
    """Load + validate, make paths absolute, freeze the config into runs/<name>/config.yaml
    (`freeze=False`: a dry run, or checks that must pass before anything is written)."""
    cfg = load_config(config_path, overrides)
    if executor:
        cfg.executor.kind = executor  # type: ignore[assignment]
    cfg.run.root = Path(cfg.run.root).resolve()
    cfg.data.root = Path(cfg.data.root).resolve()
    run = RunDir(cfg.run_dir)
    if freeze:
        freeze_run(run, cfg, config_path, reconfigure)
    return run, cfg


def freeze_run(run: RunDir, cfg: PipelineConfig, config_path: str | Path, reconfigure: bool = False) -> None:
    """Write runs/<name>/config.yaml (a different config for an existing run needs --reconfigure)."""
    try:
        run.freeze_config(dump_config(_without_executor(cfg)), reconfigure=reconfigure)
    except OSError as e:
        raise UserError(f"{config_path}: run.root: cannot create the run directory {run.root}: "
                        f"{e.strerror or e} (set run.root, e.g. -o run.root=/scratch/$USER/runs)") from None


def frozen_config_differs(run: RunDir, cfg: PipelineConfig) -> bool:
    """True when runs/<name>/config.yaml exists and is not this config (a real run needs --reconfigure)."""
    try:
        old = run.config_path.read_text(encoding="utf-8")
    except OSError:
        return False
    return old != dump_config(_without_executor(cfg))


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


def status(run: RunDir, cfg: PipelineConfig, cache: StatusCache | None = None) -> list[StageStatus]:
    stages = collect_status(run, cfg, cache=cache)
    if any(e.get("executor") in ("slurm", "submitit") for e in run.ledger()):
        from skymath.executors.slurm import augment_status

        augment_status(run, cfg, stages)
    return stages


def wait(run: RunDir, cfg: PipelineConfig, poll_s: float = 5.0, timeout_s: float | None = None,
         view: str = "auto") -> list[StageStatus]:
    """Block until no shard of the run is running, pending or unknown, showing the run as it goes
    (live table on a terminal, one line per change otherwise; see pipeline/watch.py)."""
    from skymath.pipeline.watch import watch

    return watch(run, cfg, view=view, interval=poll_s, timeout_s=timeout_s)  # type: ignore[arg-type]


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
