"""Cluster profiles (`launch/clusters/<name>.yaml`): everything site-specific about a Slurm cluster.

The sbatch templates hard-code no site value: partitions, account, qos, modules, container
runtime and images, bind paths, scratch / HF cache, NCCL variables and MaxArraySize all come
from here. Values are shell-quoted when rendered, so a profile can never inject shell code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from skymath.config.base import Strict
from skymath.errors import UserError

Runtime = Literal["apptainer", "singularity", "none"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_env_names(names: list[str] | dict[str, str]) -> None:
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")


class Partitions(Strict):
    """Partition per kind of work (a stage's `resources.partition` overrides it)."""

    cpu: str | None = None  # None: the cluster's default partition
    gpu: str | None = None


class TimeLimits(Strict):
    """Upper bound per partition kind: a stage asking for more is clamped (and told so)."""

    cpu: str | None = None
    gpu: str | None = None


class Container(Strict):
    runtime: Runtime = "none"
    # image per job shape (cpu-single, cpu-array, gpu-array, gpu-multinode) or `default`
    images: dict[str, str] = Field(default_factory=dict)
    binds: list[str] = Field(default_factory=list)  # host[:container[:opts]]
    env_pass: list[str] = Field(default_factory=list)  # variable NAMES passed into the container

    @field_validator("images")
    @classmethod
    def _shapes(cls, v: dict[str, str]) -> dict[str, str]:
        from skymath.config.schema import SHAPES

        for k in v:
            if k not in (*SHAPES, "default"):
                raise ValueError(f"images: unknown job shape {k!r} (use one of {', '.join(SHAPES)} or default)")
        return v

    @field_validator("env_pass")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        _check_env_names(v)
        return v

    def image_for(self, shape: str) -> str | None:
        return self.images.get(shape) or self.images.get("default")


class ClusterProfile(Strict):
    name: str = "cluster"
    account: str | None = None
    qos: str | None = None
    partitions: Partitions = Field(default_factory=Partitions)
    time_limits: TimeLimits = Field(default_factory=TimeLimits)
    # module names loaded (in order) at the top of every job; `module purge` first if purge_modules
    modules: list[str] = Field(default_factory=list)
    purge_modules: bool = False
    # interpreter that runs `-m skymath.worker`; None: the python that submits (sys.executable)
    python: str | None = None
    # shell lines run before the job command (e.g. `source ~/venvs/skymath/bin/activate`); trusted
    # site configuration, rendered verbatim (the only unquoted values in a script)
    setup: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # extra environment (values quoted)
    nccl_env: dict[str, str] = Field(default_factory=dict)  # NCCL_* etc. for gpu-multinode jobs
    scratch: str | None = None  # node-local scratch dir (TMPDIR); may use $VARS resolved on the node
    hf_home: str | None = None  # shared Hugging Face cache (HF_HOME)
    container: Container = Field(default_factory=Container)
    max_array_size: int | None = Field(None, ge=1)  # None: `scontrol show config` MaxArraySize
    gpus_per_node: int = Field(8, ge=0)  # default GPUs per node when a stage asks for none
    gpu_gres: bool = True  # request GPUs with --gres=gpu:N (false on CPU-only test clusters)
    gres_name: str = "gpu"  # e.g. `gpu:a100` on clusters with typed gres
    exclusive_multinode: bool = True  # --exclusive for gpu-multinode jobs
    signal_lead_s: int = Field(300, ge=1)  # --signal=B:USR2@<lead>: time to checkpoint before the limit
    max_requeues: int = Field(3, ge=0)  # requeue a job stopped by its time limit at most this often
    rendezvous_port: int = Field(29500, ge=1, le=65535)
    stop_grace_s: int = Field(120, ge=0)  # service stop job: wait this long, then scancel the service
    mail_user: str | None = None
    mail_type: str | None = None
    sbatch_extra: list[str] = Field(default_factory=list)  # extra `--opt=value` sbatch options (quoted)

    @field_validator("env", "nccl_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        _check_env_names(v)
        return v

    @field_validator("sbatch_extra")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        for opt in v:
            if not opt.startswith("--"):
                raise ValueError(f"sbatch_extra: {opt!r} must be a long option like --constraint=a100")
        return v

    def partition_for(self, shape: str) -> str | None:
        return self.partitions.gpu if shape.startswith("gpu") else self.partitions.cpu

    def time_limit_for(self, shape: str) -> str | None:
        return self.time_limits.gpu if shape.startswith("gpu") else self.time_limits.cpu


def clusters_dir() -> Path:
    from skymath.paths import LAUNCH_DIR

    return LAUNCH_DIR / "clusters"


def profile_names() -> list[str]:
    d = clusters_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_profile(name_or_path: str | Path) -> ClusterProfile:
    """A profile by name (launch/clusters/<name>.yaml) or by path to a YAML file."""
    from skymath.config.loader import load_model

    text = str(name_or_path)
    p = Path(text)
    if not (p.suffix in (".yaml", ".yml") or "/" in text):
        p = clusters_dir() / f"{text}.yaml"
        if not p.is_file():
            import difflib

            names = profile_names()
            close = difflib.get_close_matches(text, names, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names) or 'none'})"
            raise UserError(f"cluster profile {text!r}: no file {p}{hint}")
    prof = load_model(p, ClusterProfile)
    if prof.name == "cluster":
        prof.name = p.stem
    return prof
