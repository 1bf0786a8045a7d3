"""Render sbatch scripts from the Jinja templates in `slurm/`.

Every value reaches a script through a shell-quoting filter (`q` = shlex.quote, `qv` = double
quotes that expand only `$NAME`/`${NAME}`), so a job name, partition or path can never inject
shell code. Only the profile's `setup:` lines are rendered verbatim (trusted site config).
Secrets never enter a script: containers get variable NAMES, values come from the job's
environment at run time.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from skymath.config.cluster import ClusterProfile
from skymath.config.schema import SHAPES, StageSpec
from skymath.errors import UserError

_VAR = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")


def shell_quote(value: Any) -> str:
    """shlex.quote for any scalar (None renders as '')."""
    return shlex.quote("" if value is None else str(value))


def shell_vars(value: Any) -> str:
    """A double-quoted word in which only `$NAME` / `${NAME}` expand; `$(...)`, backticks,
    backslashes and quotes are escaped (for scratch paths like /scratch/$USER)."""
    text = "" if value is None else str(value)
    out: list[str] = []
    i = 0
    while i < len(text):
        m = _VAR.match(text, i)
        if m:
            out.append(m.group(0))
            i = m.end()
            continue
        ch = text[i]
        out.append("\\" + ch if ch in '\\"`$' else ch)
        i += 1
    return '"' + "".join(out) + '"'


# ---- time limits --------------------------------------------------------------------------------
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def time_seconds(text: str) -> int:
    """Slurm time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> seconds."""
    m = _TIME.match(text.strip())
    if not m:
        raise UserError(f"time limit {text!r}: expected [D-]HH:MM:SS (Slurm format)")
    d, a, b, c = m.groups()
    if d is not None:  # D-H[:M[:S]]
        return int(d) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    if c is not None:
        return int(a) * 3600 + int(b) * 60 + int(c)
    if b is not None:
        return int(a) * 60 + int(b)
    return int(a) * 60


def clamp_time(requested: str, limit: str | None) -> str:
    if limit and time_seconds(requested) > time_seconds(limit):
        return limit
    time_seconds(requested)  # validate
    return requested


# ---- container wrapper ----------------------------------------------------------------------------
def container_command(profile: ClusterProfile, shape: str, argv: list[str], *, gpu: bool,
                      run_dir: str | None = None, data_root: str | None = None,
                      api_key_env: str | None = None) -> str:
    """The shell command line that runs argv in this shape's container (or bare for runtime none).

    Delegates to skymath.containers (binds of run dir / data / HF cache / scratch, variables passed
    by NAME only). The result is a prefix further arguments can be appended to (the
    gpu-multinode launcher appends the torchrun arguments that need the job's shell).
    """
    c = profile.container
    image = c.image_for(shape)
    if c.runtime != "none" and not image:
        raise UserError(f"cluster profile {profile.name}: container.images has no image for shape {shape!r} "
                        "(set container.images.<shape> or container.images.default)")
    if c.runtime == "none":
        return shlex.join(argv)
    from skymath.containers import ContainerSpec

    def literal(path: str | None) -> str | None:  # paths with $VARS are bound via profile binds instead
        return path if path and "$" not in path else None

    spec = ContainerSpec.for_shape(
        shape, runtime=c.runtime, images={shape: image or ""}, run_dir=run_dir, data_root=data_root,
        hf_home=literal(profile.hf_home), scratch=literal(profile.scratch), binds=c.binds,
        env_pass=[*c.env_pass, *profile.env, "TMPDIR", "PYTHONUNBUFFERED"], api_key_env=api_key_env,
    )
    spec.gpu = gpu
    return spec.wrap(argv)


# ---- templates ------------------------------------------------------------------------------------
def templates_dir() -> Path:
    from skymath.paths import SLURM_TEMPLATES_DIR

    return SLURM_TEMPLATES_DIR


@cache
def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = shell_quote
    env.filters["qv"] = shell_vars
    return env


@dataclass
class JobSpec:
    """Everything one sbatch script needs; built by `job_spec`, rendered by `render_script`."""

    template: str  # cpu-array | cpu-single | gpu-array | gpu-multinode | (stop jobs use cpu-single)
    job_name: str
    run_dir: str
    stage: str
    chdir: str
    output: str  # log path pattern
    command: str = ""  # the job command line (already quoted)
    array: str | None = None  # e.g. "0-5%4" or "3,17,42"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "01:00:00"
    cpus_per_task: int = 1
    mem: str | None = None  # "2048M"
    nodes: int = 1
    gres: str | None = None
    exclusive: bool = False
    signal_lead_s: int | None = None
    requeue: bool = False
    max_requeues: int = 0
    mail_user: str | None = None
    mail_type: str | None = None
    sbatch_extra: list[tuple[str, str | None]] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    purge_modules: bool = False
    setup: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # exported with shell_quote
    env_vars: dict[str, str] = field(default_factory=dict)  # exported with shell_vars ($NAME expands)
    python: str = sys.executable
    # gpu-multinode
    nproc_per_node: int = 1
    rendezvous_port: int = 29500
    launcher: str = ""  # container-wrapped `python -m torch.distributed.run` prefix
    worker_args: list[str] = field(default_factory=list)  # after `-m skymath.worker`

    def context(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _split_extra(opts: list[str]) -> list[tuple[str, str | None]]:
    out = []
    for o in opts:
        name, _, value = o.partition("=")
        if not re.fullmatch(r"--[A-Za-z][A-Za-z0-9-]*", name):
            raise UserError(f"sbatch_extra: {o!r} is not a --long-option[=value]")
        out.append((name, value if _ else None))
    return out


def job_spec(profile: ClusterProfile, spec: StageSpec, *, stage: str, run_dir: Path, job_name: str,
             output: str, worker_argv_tail: list[str], array: str | None, chdir: Path,
             python: str | None = None, extra_env: dict[str, str] | None = None,
             data_root: str | None = None, api_key_env: str | None = None) -> JobSpec:
    """The JobSpec of one stage submission (shape, resources and site values resolved)."""
    shape = spec.shape or "cpu-single"
    if shape not in SHAPES:
        raise UserError(f"stages.{stage}.shape: unknown job shape {shape!r}")
    res = spec.resources
    gpu = shape.startswith("gpu")
    py = python or profile.python or sys.executable
    env = dict(profile.env)
    if profile.hf_home:
        env_vars = {"HF_HOME": profile.hf_home}
    else:
        env_vars = {}
    if profile.scratch:
        env_vars["SKYMATH_SCRATCH"] = profile.scratch
    if shape == "gpu-multinode":
        env.update(profile.nccl_env)
    for k, v in (extra_env or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise UserError(f"environment variable name {k!r} is not valid")
        env[k] = v
    wrap = {"run_dir": str(run_dir), "data_root": data_root, "api_key_env": api_key_env}
    js = JobSpec(
        template=shape,
        job_name=job_name,
        run_dir=str(run_dir),
        stage=stage,
        chdir=str(chdir),
        output=output,
        array=array,
        partition=res.partition or profile.partition_for(shape),
        account=profile.account,
        qos=profile.qos,
        time=clamp_time(res.time, profile.time_limit_for(shape)),
        cpus_per_task=res.cpus,
        nodes=res.nodes if shape == "gpu-multinode" else 1,
        signal_lead_s=profile.signal_lead_s,
        requeue=profile.max_requeues > 0,
        max_requeues=profile.max_requeues,
        mail_user=profile.mail_user,
        mail_type=profile.mail_type,
        sbatch_extra=_split_extra(profile.sbatch_extra),
        modules=list(profile.modules),
        purge_modules=profile.purge_modules,
        setup=list(profile.setup),
        env=env,
        env_vars=env_vars,
        python=py,
        rendezvous_port=profile.rendezvous_port,
    )
    gpus = res.gpus or (profile.gpus_per_node if shape == "gpu-multinode" else (1 if gpu else 0))
    if gpu and profile.gpu_gres and gpus > 0:
        js.gres = f"{profile.gres_name}:{gpus}"
    mem_mb = int(round(res.mem_gb * 1024))
    js.mem = f"{mem_mb}M"
    if shape == "gpu-multinode":
        js.exclusive = profile.exclusive_multinode
        js.nproc_per_node = max(1, gpus)
        js.launcher = container_command(profile, shape, [py, "-m", "torch.distributed.run"], gpu=True, **wrap)
        js.worker_args = list(worker_argv_tail)
    else:
        js.command = container_command(profile, shape, [py, "-m", "skymath.worker", *worker_argv_tail], gpu=gpu,
                                       **wrap)
    return js


def render_script(js: JobSpec) -> str:
    return _env().get_template(f"{js.template}.sh.j2").render(**js.context())


def render_stop_job(profile: ClusterProfile, *, run_dir: Path, service: str, service_job: str,
                    stop_file: Path, output: str, chdir: Path, job_name: str) -> str:
    """A tiny cpu-single job that stops a service: writes its STOP file, waits, then scancels it."""
    js = JobSpec(
        template="stop-service",
        job_name=job_name,
        run_dir=str(run_dir),
        stage=service,
        chdir=str(chdir),
        output=output,
        partition=profile.partitions.cpu,
        account=profile.account,
        qos=profile.qos,
        time="00:30:00" if profile.stop_grace_s < 1500 else clamp_time("1-00:00:00", profile.time_limits.cpu),
        cpus_per_task=1,
        mem="256M",
        sbatch_extra=[],
    )
    ctx = js.context()
    ctx.update(stop_file=str(stop_file), service_job=service_job, grace_s=profile.stop_grace_s)
    return _env().get_template("stop-service.sh.j2").render(**ctx)
