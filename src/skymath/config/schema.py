"""The pipeline config: run, executor, cluster profile, data, LLM, and the stage DAG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from skymath.config.base import Strict
from skymath.config.cluster import SafeStr, _check_sbatch_options, control_char_problem
from skymath.config.llm import LLMConfig
from skymath.paths import default_data_root

Shape = Literal["cpu-single", "cpu-array", "gpu-array", "gpu-multinode"]
SHAPES: tuple[str, ...] = ("cpu-single", "cpu-array", "gpu-array", "gpu-multinode")


def _safe_path(v: Path) -> Path:
    """Paths are rendered into #SBATCH lines (--output, --chdir): no control characters."""
    problem = control_char_problem(str(v))
    if problem:
        raise ValueError(f"{problem}: paths end up in #SBATCH lines and shell scripts")
    return v


class RunConfig(Strict):
    name: str = "demo"
    root: Path = Path("runs")
    seed: int = 0

    _root = field_validator("root")(_safe_path)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("run name may use letters, digits, '.', '_' and '-' only")
        return v


class ExecutorConfig(Strict):
    kind: Literal["local", "slurm", "submitit"] = "local"
    max_parallel: int = Field(2, ge=1)  # local: CPU slots shared by running shards
    poll_s: float = Field(0.5, gt=0)


class Resources(Strict):
    cpus: int = Field(1, ge=1)  # per task
    mem_gb: float = Field(2.0, gt=0)  # per task (per node for gpu-multinode)
    gpus: int = Field(0, ge=0)  # per task; per node for gpu-multinode
    nodes: int = Field(1, ge=1)
    time: SafeStr = "04:00:00"
    array_throttle: int | None = Field(None, ge=1)  # --array=...%K
    # site options for this stage; each overrides the profile's shapes.<shape> value, which
    # overrides the profile's top-level value
    partition: SafeStr | None = None
    account: SafeStr | None = None
    qos: SafeStr | None = None
    constraint: SafeStr | None = None
    exclude: SafeStr | None = None
    reservation: SafeStr | None = None
    sbatch_extra: list[SafeStr] = Field(default_factory=list)

    @field_validator("sbatch_extra")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        return _check_sbatch_options(v)


class StageSpec(Strict):
    kind: str
    depends_on: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)  # service stages (llm-server) used while running
    num_shards: int = Field(1, ge=1)
    shape: Shape | None = None  # default: the stage kind's
    resources: Resources = Field(default_factory=Resources)
    params: Any = Field(default_factory=dict)  # validated against the kind's Params model


class DataConfig(Strict):
    root: Path = Field(default_factory=default_data_root)

    _root = field_validator("root")(_safe_path)


class ClusterRef(Strict):
    profile: str = "local"  # a name under launch/clusters/ or a path to a YAML profile


class PipelineConfig(Strict):
    run: RunConfig = Field(default_factory=RunConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    cluster: ClusterRef = Field(default_factory=ClusterRef)
    data: DataConfig = Field(default_factory=DataConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    stages: dict[str, StageSpec] = Field(default_factory=dict)

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, v: dict[str, StageSpec]) -> dict[str, StageSpec]:
        import re

        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                raise ValueError(f"stage name {name!r}: letters, digits, '_' and '-' only")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.run.root) / self.run.name
