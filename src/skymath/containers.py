"""The container wrapper every Slurm template uses: one shell command line per job step.

Policy (issue 8): `--nv` only for GPU shapes; `--cleanenv`, so nothing from the submitting
shell leaks into a job, with the variables a job needs passed explicitly; binds of the run
directory, data, HF cache and scratch; JIT caches (Triton, torch extensions, inductor, vLLM)
on node-local /tmp. Secrets cross by NAME only: the rendered line holds `OPENAI_API_KEY`,
never its value, and the value travels in the environment of the step (not in argv, so `ps`
on a shared node never shows it).

How names cross `--cleanenv`: Apptainer copies a host variable `APPTAINERENV_X` into the
container as `X` (Singularity: `SINGULARITYENV_X`). The wrapped line is

    bash -c '<for each passed name that is set: export APPTAINERENV_name>; exec "$@"' \\
        skymath-env apptainer exec --nv --cleanenv --bind A,B --env K=V IMAGE argv...

so the copy happens in whichever process runs the line: after `srun`, on every node, with
that node's own CUDA_VISIBLE_DEVICES and SLURM_* values (an export in the batch script would
hand node 0's values to every node). Unset names stay unset in the container, so an unset
CUDA_VISIBLE_DEVICES never becomes "" (which would hide every GPU). More arguments may be
appended to the line (they land in "$@").
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from skymath.errors import UserError

RUNTIMES = ("none", "apptainer", "singularity")
SHAPES = ("cpu-single", "cpu-array", "gpu-array", "gpu-multinode")
GPU_SHAPES = frozenset({"gpu-array", "gpu-multinode"})
IMAGE_KINDS = ("synth", "train", "eval")
# the image a shape uses unless the cluster profile maps it elsewhere
DEFAULT_KIND_FOR_SHAPE = {"cpu-single": "synth", "cpu-array": "synth", "gpu-array": "eval", "gpu-multinode": "train"}

# JIT caches that must not live on a shared home/scratch file system (lock contention, stale
# locks after preemption): each goes under $SKYMATH_NODE_CACHE (default /tmp/skymath-<uid>)
NODE_CACHE_VARS = {
    "TRITON_CACHE_DIR": "triton",
    "TORCH_EXTENSIONS_DIR": "torch_extensions",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "VLLM_CACHE_ROOT": "vllm",
}
NODE_CACHE_DEFAULT = "/tmp/skymath-$(id -u)"  # our own constant, expanded by the job's shell on the node

# proxies and CA bundles: on clusters that reach the API through a proxy, without these every
# request from inside a --cleanenv container fails
PROXY_ENV_NAMES = (
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
)
# passed into every container (names only); GPU shapes add GPU_ENV_NAMES
BASE_ENV_NAMES = (
    "SLURM_*", "SKYMATH_*", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
    "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "PYTHONUNBUFFERED", *PROXY_ENV_NAMES,
)
# set in every container: packages in the user's ~/.local must not shadow the image's
CONTAINER_ENV_VALUES = {"PYTHONNOUSERSITE": "1"}
# the optional dependency groups (pyproject extras) a stage kind imports, and the image each
# default shape runs in: tests/test_containers_defs.py checks that the image of every stage's
# shape installs the extras its kind needs
KIND_EXTRAS = {"coreset": ("embed",), "sft": ("train",), "eval": ("vllm",), "llm-server": ("vllm",)}
GPU_ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "NCCL_*", "TORCH_NCCL_*", "TORCHELASTIC_*", "MASTER_ADDR", "MASTER_PORT")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATTERN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\*")  # NCCL_* -> every set variable starting NCCL_
_VAR_REF = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")
_LITERAL = r"[A-Za-z0-9_./:=@%+,-]"
_HOST_EXPR = re.compile(rf"(?:{_LITERAL}|\$\{{[A-Za-z_][A-Za-z0-9_]*\}})*")


class HostExpr(str):
    """An argv element the job's shell expands at run time, e.g. HostExpr("${HEAD}:29500").

    Only literal safe characters and `${NAME}` references are allowed; it renders inside double
    quotes, so it can never run code. Every other argv element is single-quoted (literal)."""

    def __new__(cls, text: str) -> HostExpr:
        if not text or not _HOST_EXPR.fullmatch(text):
            raise ValueError(f"HostExpr {text!r}: only [A-Za-z0-9_./:=@%+,-] and ${{NAME}} are allowed")
        return super().__new__(cls, text)


def render_arg(arg: str) -> str:
    """Shell-quote one argv element (HostExpr: double quotes, expanded by the job's shell)."""
    if isinstance(arg, HostExpr):
        return f'"{arg}"'
    return shlex.quote(str(arg))


def _check_profile_value(text: str, what: str) -> str:
    """A path or --env value from the profile: `$NAME`/`${NAME}` may expand on the node; no other
    `$`, no backtick, backslash, comma or newline (Apptainer splits --bind/--env on ',' and
    evaluates `$` of --env values inside the container)."""
    text = str(text)
    bad = sorted({c for c in _VAR_REF.sub("", text) if c in ",$`\\\n"})
    if bad:
        raise UserError(
            f"{what}: {text!r} contains {' '.join(repr(c) for c in bad)} "
            "(only $NAME / ${NAME} may expand, and Apptainer splits its lists on ',')"
        )
    return text


def _quote_vars(text: str) -> str:
    """Single quotes when nothing expands, else double quotes (text passed _check_profile_value)."""
    if "$" not in text:
        return shlex.quote(text)
    return '"' + text.replace('"', '\\"') + '"'


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise UserError(f"container.runtime: unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    return runtime


def env_prefix(runtime: str) -> str:
    """The host-side prefix the runtime turns into a container variable."""
    return {"apptainer": "APPTAINERENV_", "singularity": "SINGULARITYENV_"}[check_runtime(runtime)]


def _split_names(env_names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Validate pass-through names: exact names and `PREFIX*` patterns (never a bare `*`)."""
    names: list[str] = []
    prefixes: list[str] = []
    for raw in env_names:
        n = str(raw).strip()
        m = _PATTERN.fullmatch(n)
        if m:
            if m.group(1) not in prefixes:
                prefixes.append(m.group(1))
        elif _NAME.fullmatch(n):
            if n not in names:
                names.append(n)
        else:
            raise UserError(
                f"container.env_pass: {raw!r} is not a variable name or a PREFIX_* pattern "
                "(names only: values are never written into job scripts)"
            )
    return names, prefixes


def _check_env_values(env_values: Mapping[str, str], explicit_names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in env_values.items():
        if not _NAME.fullmatch(str(k)):
            raise UserError(f"container env: {k!r} is not a valid variable name")
        if k in explicit_names:
            raise UserError(f"container env: {k} is both passed by name and given a value; keep one")
        out[str(k)] = _check_profile_value(str(v), f"container env {k}")
    return out


def _check_binds(binds: Iterable[str]) -> list[str]:
    out: list[str] = []
    for b in binds:
        b = str(b).strip()
        if b and b not in out:
            out.append(_check_profile_value(b, "container.binds"))
    return out


def effective_env_names(gpu: bool, env_names: Iterable[str] = (), env_values: Mapping[str, str] | None = None) -> list[str]:
    """The policy names (BASE_ENV_NAMES, plus GPU_ENV_NAMES for GPU shapes) followed by the
    caller's; a default name that has an explicit value is dropped (the value wins)."""
    values = env_values or {}
    defaults = [n for n in (*BASE_ENV_NAMES, *(GPU_ENV_NAMES if gpu else ())) if n not in values]
    out: list[str] = []
    for n in (*defaults, *env_names):
        if n not in out:
            out.append(n)
    return out


def _cache_default(var: str) -> str:
    return f'"${{{var}:-${{SKYMATH_NODE_CACHE:-{NODE_CACHE_DEFAULT}}}/{NODE_CACHE_VARS[var]}}}"'


def passthrough_script(runtime: str, env_names: Iterable[str]) -> str:
    """bash code: copy each passed variable that is set to PREFIX+name, set node-local caches, exec "$@"."""
    prefix = env_prefix(runtime)
    names, prefixes = _split_names(env_names)
    names = [n for n in names if n not in NODE_CACHE_VARS]
    parts = []
    loop_words = " ".join(names + [f"${{!{p}@}}" for p in prefixes])
    if loop_words:
        parts.append(
            f'for _v in {loop_words}; do if [ -n "${{!_v+x}}" ]; then export "{prefix}$_v=${{!_v}}"; fi; done'
        )
    parts.append("export " + " ".join(f"{prefix}{var}={_cache_default(var)}" for var in NODE_CACHE_VARS))
    parts.append('exec "$@"')
    return "; ".join(parts)


def wrap_command(
    runtime: str,
    image: str | None,
    argv: Sequence[str],
    *,
    gpu: bool,
    binds: Iterable[str] = (),
    env_names: Iterable[str] = (),
    env_values: Mapping[str, str] | None = None,
) -> str:
    """One shell command line that runs argv under the runtime (see the module docstring).

    runtime "none": the plain quoted argv (the caller exports env, see env_export_lines).
    "apptainer"/"singularity": `bash -c '<pass names>; exec "$@"' skymath-env RUNTIME exec
    [--nv] --cleanenv [--bind a,b] [--env K=V ...] IMAGE argv...`, safe after `srun`. The names
    passed are the policy's (effective_env_names) plus env_names; env_values go in as --env
    (no secrets there: they are written into the script). Binds, values and the image path may
    use $NAME, expanded by the job's shell on the node.
    """
    check_runtime(runtime)
    if not argv:
        raise ValueError("wrap_command: empty argv")
    args = " ".join(render_arg(a) for a in argv)
    if runtime == "none":
        return args
    if not image:
        raise UserError(
            f"container.runtime is {runtime!r} but no image is set for this job "
            "(set container.images.<shape> in the cluster profile)"
        )
    explicit, _ = _split_names(env_names)
    given = dict(env_values or {})
    values = _check_env_values({**{k: v for k, v in CONTAINER_ENV_VALUES.items() if k not in explicit}, **given},
                               explicit)
    names = effective_env_names(gpu, env_names, values)
    parts = [runtime, "exec"] + (["--nv"] if gpu else []) + ["--cleanenv"]
    bind_list = _check_binds(binds)
    if bind_list:
        parts += ["--bind", _quote_vars(",".join(bind_list))]
    for k, v in values.items():
        parts += ["--env", _quote_vars(f"{k}={v}")]
    parts.append(_quote_vars(_check_profile_value(str(image), "container image")))
    script = passthrough_script(runtime, names)
    return f"bash -c {shlex.quote(script)} skymath-env {' '.join(parts)} {args}"


def env_export_lines(
    runtime: str, env_names: Iterable[str] = (), env_values: Mapping[str, str] | None = None, *, gpu: bool = False
) -> list[str]:
    """Shell lines a job script may run before its command. Runtime "none": export env_values
    (quoted) and the node-local caches. Container runtimes: the same copies wrap_command does
    itself (PREFIX+name for each passed name that is set), for scripts that want them visible;
    don't put them before `srun` for SLURM_*/CUDA_* (they would carry the batch node's values)."""
    check_runtime(runtime)
    if runtime == "none":
        lines = []
        for k, v in (env_values or {}).items():
            if not _NAME.fullmatch(str(k)):
                raise UserError(f"container env: {k!r} is not a valid variable name")
            lines.append(f"export {k}={shlex.quote(str(v))}")
        return lines + [f"export {var}={_cache_default(var)}" for var in NODE_CACHE_VARS]
    prefix = env_prefix(runtime)
    names, prefixes = _split_names(effective_env_names(gpu, env_names, env_values))
    lines = [
        f'if [ -n "${{{n}+x}}" ]; then export {prefix}{n}="${{{n}}}"; fi' for n in names if n not in NODE_CACHE_VARS
    ]
    lines += [f'for _v in ${{!{p}@}}; do export "{prefix}$_v=${{!_v}}"; done' for p in prefixes]
    return lines + [f"export {prefix}{var}={_cache_default(var)}" for var in NODE_CACHE_VARS]


@dataclass
class ContainerSpec:
    """Everything a template needs to wrap one job shape's command (built from profile values)."""

    runtime: str
    image: str | None
    gpu: bool
    binds: list[str] = field(default_factory=list)
    env_names: list[str] = field(default_factory=list)
    env_values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_shape(
        cls,
        shape: str,
        *,
        runtime: str,
        images: Mapping[str, str] | None = None,
        run_dir: str | None = None,
        data_root: str | None = None,
        hf_home: str | None = None,
        scratch: str | None = None,
        binds: Iterable[str] = (),
        env_pass: Iterable[str] = (),
        api_key_env: str | None = None,
    ) -> ContainerSpec:
        """Apply the policy: the shape's image (or images["default"]), binds of the run dir, data,
        HF cache, scratch and the profile's, HF_HOME as a value when set, the API key's name."""
        if shape not in SHAPES:
            raise UserError(f"unknown job shape {shape!r} (choose from {', '.join(SHAPES)})")
        check_runtime(runtime)
        imgs = images or {}
        image = imgs.get(shape) or imgs.get("default")
        if runtime != "none" and not image:
            raise UserError(f"container.images.{shape}: no image set for runtime {runtime!r}")
        bind_list = [str(p) for p in (run_dir, data_root, hf_home, scratch) if p] + [str(b) for b in binds]
        values = {"HF_HOME": str(hf_home)} if hf_home else {}
        names = [*env_pass, *([api_key_env] if api_key_env else [])]
        return cls(runtime, image if runtime != "none" else None, shape in GPU_SHAPES,
                   _check_binds(bind_list), names, values)

    def wrap(self, argv: Sequence[str]) -> str:
        return wrap_command(
            self.runtime, self.image, argv, gpu=self.gpu, binds=self.binds,
            env_names=self.env_names, env_values=self.env_values,
        )

    def export_lines(self) -> list[str]:
        return env_export_lines(self.runtime, self.env_names, self.env_values, gpu=self.gpu)
