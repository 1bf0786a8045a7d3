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
from skymath.config.schema import SHAPES, Resources, StageSpec
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
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def time_seconds(text: str) -> int:
    """Slurm time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> seconds."""
    m = _TIME.fullmatch(text.strip(" "))
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


def format_time(seconds: int) -> str:
    """Seconds -> Slurm's [D-]HH:MM:SS."""
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return (f"{d}-" if d else "") + f"{h:02d}:{m:02d}:{sec:02d}"


def check_time(stage: str, requested: str, limit: str | None, limit_key: str) -> str:
    """The requested time, validated; above the profile's limit is an error (never clamped: a job
    silently cut short loses the work of its last hours)."""
    need = time_seconds(requested)
    if limit and need > time_seconds(limit):
        raise UserError(f"stage {stage}: resources.time {requested} is above the time limit {limit} allowed by the "
                        f"cluster profile ({limit_key}); lower stages.{stage}.resources.time (jobs stopped by "
                        "their limit checkpoint and requeue) or raise the profile's limit if the partition allows it")
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

    template: str  # cpu-array | cpu-single | gpu-array | gpu-multinode | stop-service
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
    constraint: str | None = None
    exclude: str | None = None
    reservation: str | None = None
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
    # gpu-multinode: the container-wrapped `python -m skymath.train.launch ... --` prefix, then the
    # worker's arguments (the ONE multi-node launcher, see skymath/train/launch.py)
    nproc_per_node: int = 1
    launcher: str = ""
    worker_args: list[str] = field(default_factory=list)

    def context(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SiteOptions:
    """The sbatch site options of one job, merged: stage `resources` over `shapes.<shape>` over
    the profile's top level. `keys` says where each value came from (for error messages)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    reservation: str | None = None
    time_limit: str | None = None
    gres_name: str = "gpu"
    sbatch_extra: list[tuple[str, str | None]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)


MERGED = ("partition", "account", "qos", "constraint", "exclude", "reservation")


def site_options(profile: ClusterProfile, shape: str, res: Resources | None = None, stage: str | None = None) -> SiteOptions:
    """Merge the profile's top-level values, `shapes.<shape>` and the stage's `resources`."""
    shp = profile.shape_options(shape)
    out = SiteOptions(gres_name=shp.gres_name or profile.gres_name)
    kind = "gpu" if shape.startswith("gpu") else "cpu"
    top = {"partition": getattr(profile.partitions, kind), "account": profile.account, "qos": profile.qos,
           "constraint": profile.constraint, "exclude": profile.exclude, "reservation": profile.reservation}
    for name in MERGED:
        levels = [(top[name], f"{'partitions.' + kind if name == 'partition' else name}"),
                  (getattr(shp, name), f"shapes.{shape}.{name}")]
        if res is not None:
            levels.append((getattr(res, name), f"stages.{stage}.resources.{name}"))
        for value, key in levels:
            if value:
                setattr(out, name, value)
                out.keys[name] = key
    out.time_limit = shp.time_limit or getattr(profile.time_limits, kind)
    out.keys["time_limit"] = f"shapes.{shape}.time_limit" if shp.time_limit else f"time_limits.{kind}"
    extra: dict[str, str | None] = {}
    for opts in (profile.sbatch_extra, shp.sbatch_extra, res.sbatch_extra if res is not None else []):
        for name, value in _split_extra(opts):
            extra.pop(name, None)  # a later level replaces the same option
            extra[name] = value
    out.sbatch_extra = list(extra.items())
    return out


def _split_extra(opts: list[str]) -> list[tuple[str, str | None]]:
    out = []
    for o in opts:
        name, _, value = o.partition("=")
        if not re.fullmatch(r"--[A-Za-z][A-Za-z0-9-]*", name):
            raise UserError(f"sbatch_extra: {o!r} is not a --long-option[=value]")
        out.append((name, value if _ else None))
    return out


def check_rendered_values(js: JobSpec, where: str) -> None:
    """No control character in any value that reaches the script (the profile and config are
    validated on load; this also covers values built at run time: cwd, run dir, job name)."""
    from skymath.config.cluster import control_char_problem

    def walk(value: Any, key: str) -> None:
        if isinstance(value, str):
            problem = control_char_problem(value)
            if problem:
                raise UserError(f"{where}: {key} {value!r} {problem}: values end up in #SBATCH lines and "
                                "shell scripts")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(str(k), f"{key} key")
                walk(v, f"{key}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")

    for name, value in js.__dict__.items():
        if name not in ("command", "launcher"):  # built from the values checked here
            walk(value, name)


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
    site = site_options(profile, shape, res, stage)
    env = dict(profile.env)
    env_vars = {"HF_HOME": profile.hf_home} if profile.hf_home else {}
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
        partition=site.partition,
        account=site.account,
        qos=site.qos,
        constraint=site.constraint,
        exclude=site.exclude,
        reservation=site.reservation,
        time=check_time(stage, res.time, site.time_limit, site.keys["time_limit"]),
        cpus_per_task=res.cpus,
        nodes=res.nodes if shape == "gpu-multinode" else 1,
        signal_lead_s=profile.signal_lead_s,
        requeue=profile.max_requeues > 0,
        max_requeues=profile.max_requeues,
        mail_user=profile.mail_user,
        mail_type=profile.mail_type,
        sbatch_extra=site.sbatch_extra,
        modules=list(profile.modules),
        purge_modules=profile.purge_modules,
        setup=list(profile.setup),
        env=env,
        env_vars=env_vars,
        python=py,
    )
    gpus = res.gpus or (profile.gpus_per_node if shape == "gpu-multinode" else (1 if gpu else 0))
    if gpu and profile.gpu_gres and gpus > 0:
        js.gres = f"{site.gres_name}:{gpus}"
    js.mem = f"{int(round(res.mem_gb * 1024))}M"
    check_rendered_values(js, f"stage {stage}")
    if shape == "gpu-multinode":
        js.exclusive = profile.exclusive_multinode
        js.nproc_per_node = max(1, gpus)
        js.launcher = container_command(profile, shape, launcher_argv(py, js.nproc_per_node, profile), gpu=True, **wrap)
        js.worker_args = list(worker_argv_tail)
    else:
        js.command = container_command(profile, shape, [py, "-m", "skymath.worker", *worker_argv_tail], gpu=gpu,
                                       **wrap)
    return js


def launcher_argv(python: str, nproc_per_node: int, profile: ClusterProfile) -> list[str]:
    """`python -m skymath.train.launch` with the signal/shutdown/port policy of this profile
    (the worker's arguments follow the `--`)."""
    return [python, "-m", "skymath.train.launch", "--nproc-per-node", str(nproc_per_node),
            "--port-base", str(profile.rendezvous_port), "--shutdown-timeout", str(profile.checkpoint_grace),
            "--"]


def render_script(js: JobSpec) -> str:
    return _env().get_template(f"{js.template}.sh.j2").render(**js.context())


def stop_job_time(profile: ClusterProfile) -> str:
    """Long enough for the stop job's grace period plus a margin; within the cpu-single limit."""
    need = format_time(max(600, profile.stop_grace_s + 300))
    site = site_options(profile, "cpu-single")
    if site.time_limit and time_seconds(need) > time_seconds(site.time_limit):
        raise UserError(f"cluster profile {profile.name}: stop_grace_s {profile.stop_grace_s} needs a {need} stop job, "
                        f"above the cpu-single time limit {site.time_limit} ({site.keys['time_limit']})")
    return need


def render_stop_job(profile: ClusterProfile, *, run_dir: Path, service: str, service_job: str,
                    stop_file: Path, output: str, chdir: Path, job_name: str) -> str:
    """A tiny cpu-single job that stops a service: writes its STOP file, waits, then scancels it."""
    site = site_options(profile, "cpu-single")
    js = JobSpec(
        template="stop-service",
        job_name=job_name,
        run_dir=str(run_dir),
        stage=service,
        chdir=str(chdir),
        output=output,
        partition=site.partition,
        account=site.account,
        qos=site.qos,
        constraint=site.constraint,
        exclude=site.exclude,
        reservation=site.reservation,
        time=stop_job_time(profile),
        cpus_per_task=1,
        mem="256M",
        sbatch_extra=site.sbatch_extra,
    )
    check_rendered_values(js, f"stop job of service {service}")
    ctx = js.context()
    ctx.update(stop_file=str(stop_file), service_job=service_job, grace_s=profile.stop_grace_s)
    return _env().get_template("stop-service.sh.j2").render(**ctx)
