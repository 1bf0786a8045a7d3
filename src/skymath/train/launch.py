"""THE multi-node launcher (the gpu-multinode template and the tests both run it): `srun` starts
ONE task per node, each runs this module, which runs `torchrun` (c10d rendezvous on the first
node, one process per GPU) around `python -m skymath.worker`. No pdsh/ssh DeepSpeed launcher.
With one process in total it execs the worker directly, so the same entry point runs
single-process on a laptop:

    srun --ntasks-per-node=1 python -m skymath.train.launch [--nproc-per-node N] [--port-base P]
         [--shutdown-timeout S] [--] RUN_DIR STAGE SHARD

Signal policy (torch 2.13's torchrun): `--signals-to-handle` includes SIGUSR2, so the agent
forwards the time-limit signal to every worker (which checkpoint and exit 143) instead of dying
on it; `--shutdown-timeout S` gives them S seconds for that checkpoint before SIGKILL (torchrun's
default is 30 s, far too short for a 7B ZeRO checkpoint); the profile sizes S inside its signal
lead. torchrun exits 1 after a signal, so this launcher runs it as a child, forwards SIGUSR2 /
SIGTERM / SIGINT to it and exits 143 ("stopped: requeue me") when it was stopped by one.
The rendezvous port is per job: port base + SLURM_JOB_ID % 1000, never one fixed port that two
jobs sharing a node would fight over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_env(env: dict[str, str] | None = None) -> DistEnv:
    """Rank / world size / local rank as torchrun sets them (defaults: single process)."""
    e = os.environ if env is None else env
    return DistEnv(int(e.get("RANK", 0)), int(e.get("WORLD_SIZE", 1)), int(e.get("LOCAL_RANK", 0)))


def slurm_master_addr(env: dict[str, str] | None = None) -> str:
    """First host of the allocation ($SLURM_JOB_NODELIST expanded by scontrol), else localhost."""
    e = os.environ if env is None else env
    nodelist = e.get("SLURM_JOB_NODELIST") or e.get("SLURM_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    return nodelist.split(",")[0].split("[")[0]


def gpus_on_node(env: dict[str, str] | None = None) -> int:
    e = os.environ if env is None else env
    for key in ("SKYMATH_GPUS_PER_NODE", "SLURM_GPUS_ON_NODE"):
        if e.get(key, "").isdigit():
            return int(e[key])
    visible = e.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return len([d for d in visible.split(",") if d.strip()])
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        return len([ln for ln in out.stdout.splitlines() if ln.startswith("GPU ")])
    return 0


EXIT_STOPPED = 143
HANDLED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2"
DEFAULT_PORT_BASE = 29500
DEFAULT_SHUTDOWN_TIMEOUT = 270
PORT_SPAN = 1000


def rendezvous_port(env: dict[str, str] | None = None, base: int = DEFAULT_PORT_BASE) -> int:
    """base + SLURM_JOB_ID % 1000: the same on every node of a job, different for jobs sharing a node."""
    e = os.environ if env is None else env
    job = e.get("SLURM_JOB_ID", "0")
    return base + (int(job) % PORT_SPAN if job.isdigit() else 0)


def torchrun_argv(worker_args: list[str], nnodes: int, nproc_per_node: int, master_addr: str,
                  port: int = DEFAULT_PORT_BASE, rdzv_id: str = "skymath",
                  shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT) -> list[str]:
    """The torchrun command line (c10d rendezvous) that runs `python -m skymath.worker ARGS`."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={nproc_per_node}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={master_addr}:{port}", f"--rdzv_id={rdzv_id}",
            "--max_restarts=0", f"--signals-to-handle={HANDLED_SIGNALS}", f"--shutdown-timeout={shutdown_timeout}",
            "-m", "skymath.worker", *worker_args]


def launch_argv(worker_args: list[str], env: dict[str, str] | None = None, *, nproc_per_node: int | None = None,
                port_base: int = DEFAULT_PORT_BASE, shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT) -> list[str]:
    """What this node should run: torchrun when >1 process in total, else the worker itself."""
    e = os.environ if env is None else env
    nnodes = int(e.get("SLURM_JOB_NUM_NODES") or e.get("SLURM_NNODES") or 1)
    nproc = nproc_per_node or int(e.get("SKYMATH_NPROC_PER_NODE") or 0) or max(gpus_on_node(e), 1)
    if nnodes * nproc == 1:
        return [sys.executable, "-m", "skymath.worker", *worker_args]
    return torchrun_argv(worker_args, nnodes, nproc, slurm_master_addr(e), port=rendezvous_port(e, port_base),
                         rdzv_id=e.get("SLURM_JOB_ID", "skymath"), shutdown_timeout=shutdown_timeout)


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """[--nproc-per-node N] [--port-base P] [--shutdown-timeout S] [--] WORKER_ARGS..."""
    opts: dict = {}
    names = {"--nproc-per-node": "nproc_per_node", "--port-base": "port_base", "--shutdown-timeout": "shutdown_timeout"}
    i = 0
    while i < len(argv) and argv[i] in names:
        if i + 1 >= len(argv) or not argv[i + 1].isdigit():
            raise SystemExit(f"skymath.train.launch: {argv[i]} needs a number")
        opts[names[argv[i]]] = int(argv[i + 1])
        i += 2
    if i < len(argv) and argv[i] == "--":
        i += 1
    return opts, argv[i:]


def run_forwarding_signals(cmd: list[str]) -> int:
    """Run cmd as a child; forward SIGUSR2/SIGTERM/SIGINT; 143 if a signal stopped it, else its code."""
    child = subprocess.Popen(cmd)
    stopped: list[int] = []

    def forward(signum, _frame):
        stopped.append(signum)
        print(f"[skymath] launcher got {signal.Signals(signum).name}: forwarding to torchrun (pid {child.pid})",
              file=sys.stderr, flush=True)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    rc = child.wait()
    if rc == 0:
        return 0
    if stopped:
        print(f"[skymath] torchrun exited {rc} after {signal.Signals(stopped[0]).name}: stopped (exit "
              f"{EXIT_STOPPED})", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    return rc if rc > 0 else 128 - rc


def main(argv: list[str] | None = None) -> None:
    opts, args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if len(args) < 3 or args[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd = launch_argv(args, **opts)
    print("[skymath] " + ("run " if "torch.distributed.run" in cmd else "exec ") + " ".join(cmd),
          file=sys.stderr, flush=True)
    if "torch.distributed.run" not in cmd:
        os.execv(cmd[0], cmd)  # one process: the worker handles the signals itself
    sys.exit(run_forwarding_signals(cmd))


if __name__ == "__main__":
    main()
