"""Cluster profiles (`launch/clusters/<name>.yaml`): everything site-specific about a Slurm cluster.

The sbatch templates hard-code no site value: partitions, account, qos, modules, container
runtime and images, bind paths, scratch / HF cache, NCCL variables and MaxArraySize all come
from here. Values are shell-quoted when rendered, so a profile can never inject shell code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from skymath.config.base import Strict
from skymath.errors import UserError

Runtime = Literal["apptainer", "singularity", "none"]
ShapeName = Literal["cpu-single", "cpu-array", "gpu-array", "gpu-multinode"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NAMES = {"\n": "newline", "\r": "carriage return", "\x00": "NUL", "\t": "tab"}
REQUEUE_MARGIN_S = 30  # after the step stopped: requeue + exit, inside the signal lead


def control_char_problem(text: str) -> str | None:
    """'contains a newline' when text holds a C0 control character (or DEL), else None.

    A newline in a `#SBATCH` value ends sbatch's option parsing and can start a command line;
    shell quoting does not protect a comment, so such values are refused outright."""
    m = _CONTROL.search(text)
    if not m:
        return None
    ch = m.group(0)
    return f"contains a control character ({_CONTROL_NAMES.get(ch, f'0x{ord(ch):02x}')})"


def _no_control(v: str) -> str:
    problem = control_char_problem(v)
    if problem:
        raise ValueError(f"{problem}: values end up in #SBATCH lines and shell scripts")
    return v


SafeStr = Annotated[str, AfterValidator(_no_control)]


def _check_env_names(names: list[str] | dict[str, str]) -> None:
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")


def _check_sbatch_options(v: list[str]) -> list[str]:
    for opt in v:
        if not re.fullmatch(r"--[A-Za-z][A-Za-z0-9-]*(=.*)?", opt, re.S):
            raise ValueError(f"sbatch_extra: {opt!r} must be a long option like --constraint=a100")
    return v


class Partitions(Strict):
    """Partition per kind of work (`shapes.<shape>.partition` and a stage's `resources.partition`
    override it)."""

    cpu: SafeStr | None = None  # None: the cluster's default partition
    gpu: SafeStr | None = None


class TimeLimits(Strict):
    """The longest time a job may ask for, per partition kind (`shapes.<shape>.time_limit`
    overrides it). A stage asking for more is an error before anything is queued, never clamped."""

    cpu: SafeStr | None = None
    gpu: SafeStr | None = None


class ShapeOptions(Strict):
    """Site options for the jobs of one shape, merged over the profile's top-level values
    (a stage's `resources` override these in turn)."""

    partition: SafeStr | None = None
    account: SafeStr | None = None
    qos: SafeStr | None = None
    constraint: SafeStr | None = None  # e.g. "a100" on GPU shapes only
    exclude: SafeStr | None = None  # nodes never to use, e.g. "gpu[07-08]"
    reservation: SafeStr | None = None
    time_limit: SafeStr | None = None
    gres_name: SafeStr | None = None  # e.g. "gpu:a100" for typed GRES
    sbatch_extra: list[SafeStr] = Field(default_factory=list)

    @field_validator("sbatch_extra")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        return _check_sbatch_options(v)


class Container(Strict):
    runtime: Runtime = "none"
    # image per job shape (cpu-single, cpu-array, gpu-array, gpu-multinode) or `default`
    images: dict[str, SafeStr] = Field(default_factory=dict)
    binds: list[SafeStr] = Field(default_factory=list)  # host[:container[:opts]]
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
    name: SafeStr = "cluster"
    account: SafeStr | None = None
    qos: SafeStr | None = None
    constraint: SafeStr | None = None  # every shape; prefer shapes.<shape>.constraint
    exclude: SafeStr | None = None
    reservation: SafeStr | None = None
    partitions: Partitions = Field(default_factory=Partitions)
    time_limits: TimeLimits = Field(default_factory=TimeLimits)
    shapes: dict[ShapeName, ShapeOptions] = Field(default_factory=dict)  # per-shape site options
    # module names loaded (in order) at the top of every job; `module purge` first if purge_modules
    modules: list[SafeStr] = Field(default_factory=list)
    purge_modules: bool = False
    # interpreter that runs `-m skymath.worker`; None: the python that submits (sys.executable)
    python: SafeStr | None = None
    # shell lines run before the job command (e.g. `source ~/venvs/skymath/bin/activate`); trusted
    # site configuration, rendered verbatim (the only unquoted values in a script)
    setup: list[SafeStr] = Field(default_factory=list)
    env: dict[str, SafeStr] = Field(default_factory=dict)  # extra environment (values quoted)
    nccl_env: dict[str, SafeStr] = Field(default_factory=dict)  # NCCL_* etc. for gpu-multinode jobs
    scratch: SafeStr | None = None  # node-local scratch dir (TMPDIR); may use $VARS resolved on the node
    hf_home: SafeStr | None = None  # shared Hugging Face cache (HF_HOME)
    container: Container = Field(default_factory=Container)
    max_array_size: int | None = Field(None, ge=1)  # None: `scontrol show config` MaxArraySize
    gpus_per_node: int = Field(8, ge=0)  # default GPUs per node when a stage asks for none
    gpu_gres: bool = True  # request GPUs with --gres=gpu:N (false on CPU-only test clusters)
    gres_name: SafeStr = "gpu"  # e.g. `gpu:a100` on clusters with typed gres
    exclusive_multinode: bool = True  # --exclusive for gpu-multinode jobs
    # --signal=B:USR2@<lead>: the step is told to stop this long before the time limit
    signal_lead_s: int = Field(300, ge=1)
    # how long a stopping gpu-multinode step may take to save its checkpoint before torchrun
    # SIGKILLs the workers (torchrun --shutdown-timeout); must fit inside signal_lead_s.
    # None: signal_lead_s minus a 30 s margin for the requeue
    checkpoint_grace_s: int | None = Field(None, ge=1)
    max_requeues: int = Field(3, ge=0)  # requeue a job stopped by its time limit at most this often
    # base of the per-job rendezvous port: gpu-multinode jobs use base + SLURM_JOB_ID % 1000, so two
    # jobs sharing a node never collide on one fixed port
    rendezvous_port: int = Field(29500, ge=1024, le=64535)
    stop_grace_s: int = Field(120, ge=0)  # service stop job: wait this long, then scancel the service
    mail_user: SafeStr | None = None
    mail_type: SafeStr | None = None
    sbatch_extra: list[SafeStr] = Field(default_factory=list)  # `--opt=value` for every shape (quoted)

    @field_validator("env", "nccl_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        _check_env_names(v)
        return v

    @field_validator("sbatch_extra")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        return _check_sbatch_options(v)

    @field_validator("checkpoint_grace_s")
    @classmethod
    def _grace_fits_in_lead(cls, v: int | None, info: ValidationInfo) -> int | None:
        lead = info.data.get("signal_lead_s")
        if v is not None and lead is not None and v + REQUEUE_MARGIN_S > lead:
            raise ValueError(f"{v} s + {REQUEUE_MARGIN_S} s for the requeue must fit inside signal_lead_s ({lead}): "
                             "raise signal_lead_s or lower checkpoint_grace_s")
        return v

    @property
    def checkpoint_grace(self) -> int:
        """torchrun's --shutdown-timeout: the configured grace, else the lead minus the margin."""
        if self.checkpoint_grace_s is not None:
            return self.checkpoint_grace_s
        return max(1, self.signal_lead_s - REQUEUE_MARGIN_S)

    def shape_options(self, shape: str) -> ShapeOptions:
        return self.shapes.get(shape) or ShapeOptions()  # type: ignore[call-overload]

    def partition_for(self, shape: str) -> str | None:
        opts = self.shape_options(shape)
        if opts.partition:
            return opts.partition
        return self.partitions.gpu if shape.startswith("gpu") else self.partitions.cpu

    def time_limit_for(self, shape: str) -> str | None:
        opts = self.shape_options(shape)
        if opts.time_limit:
            return opts.time_limit
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
