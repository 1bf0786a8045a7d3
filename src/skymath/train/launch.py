"""Multi-node launch: `srun` starts ONE task per node, each runs this module, which execs `torchrun`
(c10d rendezvous on the first node, one process per GPU) around `python -m skymath.worker`.
No pdsh/ssh DeepSpeed launcher. With one node and no GPU it execs the worker directly, so the same
entry point runs single-process on a laptop:

    srun --ntasks-per-node=1 python -m skymath.train.launch RUN_DIR STAGE SHARD

SIGUSR2 is ignored in the torchrun agent (a signal that would otherwise kill the agent) and
re-armed by each worker process, so `scancel --signal=USR2` / `#SBATCH --signal=USR2@600` reaches
the training processes, which checkpoint and exit 143 for the requeue.
"""

from __future__ import annotations

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


def torchrun_argv(worker_args: list[str], nnodes: int, nproc_per_node: int, master_addr: str,
                  port: int = 29500, rdzv_id: str = "skymath") -> list[str]:
    """The torchrun command line (c10d rendezvous) that runs `python -m skymath.worker ARGS`."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={nproc_per_node}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={master_addr}:{port}", f"--rdzv_id={rdzv_id}",
            "--max_restarts=0", "-m", "skymath.worker", *worker_args]


def launch_argv(worker_args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """What this node should exec: torchrun when >1 process in total, else the worker itself."""
    e = os.environ if env is None else env
    nnodes = int(e.get("SLURM_JOB_NUM_NODES") or e.get("SLURM_NNODES") or 1)
    nproc = int(e.get("SKYMATH_NPROC_PER_NODE") or 0) or max(gpus_on_node(e), 1)
    if nnodes * nproc == 1:
        return [sys.executable, "-m", "skymath.worker", *worker_args]
    port = 29500 + int(e.get("SLURM_JOB_ID", "0") or 0) % 1000
    return torchrun_argv(worker_args, nnodes, nproc, slurm_master_addr(e), port=port,
                         rdzv_id=e.get("SLURM_JOB_ID", "skymath"))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd = launch_argv(args)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # inherited by torchrun; workers re-arm it
    print("[skymath] exec " + " ".join(cmd), file=sys.stderr, flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
