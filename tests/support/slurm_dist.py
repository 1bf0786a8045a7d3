"""Test stage kind `support.slurm_dist`: a real 2-process torch.distributed (gloo) all-reduce.

Run through the gpu-multinode template (srun -> python -m skymath.train.launch -> torchrun c10d
rendezvous) on the local CPU cluster; rank 0 records what the ranks agreed on in the shard's
`.done` marker. With `hold_first_run`, the first run (SLURM_RESTART_COUNT 0) waits until it is
told to stop (SIGUSR2 forwarded by torchrun to every rank), each rank noting that in a file:
what a checkpointing trainer does at the time limit.
"""

from __future__ import annotations

import os
import time

from skymath.stages import StageParams

KIND = "support.slurm_dist"
SHAPE = "gpu-multinode"
COOPERATIVE_STOP = True  # the worker only sets the stop flag on SIGUSR2; run() notices it


class Params(StageParams):
    hold_first_run: bool = False
    hold_s: float = 300.0


def run(ctx) -> dict:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        hosts: list = [None] * world
        dist.all_gather_object(hosts, f"{rank}@{os.uname().nodename}")
        work = ctx.run.work_dir(ctx.stage_name, ctx.shard)
        if ctx.params.hold_first_run and restart == 0:
            (work / f"holding-rank{rank}").write_text(str(os.getpid()))
            t0 = time.monotonic()
            while not ctx.stop_requested() and time.monotonic() - t0 < ctx.params.hold_s:
                time.sleep(0.2)
            if ctx.stop_requested():  # a trainer would save its checkpoint here
                (work / f"stopped-rank{rank}-restart{restart}").write_text("SIGUSR2")
                return {}
        if rank == 0:
            w = ctx.writer()
            w.write({"id": f"dist-{ctx.shard}", "problem": f"all_reduce over {world} ranks = {t.item()}",
                     "stage": ctx.stage_name})
        return {"world_size": world, "allreduce_sum": t.item(), "ranks": hosts, "restart": restart,
                "rdzv_run_id": os.environ.get("TORCHELASTIC_RUN_ID"), "master_addr": os.environ.get("MASTER_ADDR"),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    finally:
        dist.destroy_process_group()
