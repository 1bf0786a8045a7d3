"""Test stage kind `support.slurm_dist`: a real 2-process torch.distributed (gloo) all-reduce.

Run through the gpu-multinode template (srun -> torchrun c10d rendezvous) on the local CPU
cluster; rank 0 records what the ranks agreed on in the shard's `.done` marker.
"""

from __future__ import annotations

import os

from skymath.stages import StageParams

KIND = "support.slurm_dist"
SHAPE = "gpu-multinode"


class Params(StageParams):
    pass


def run(ctx) -> dict:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        hosts: list = [None] * world
        dist.all_gather_object(hosts, f"{rank}@{os.uname().nodename}")
        if rank == 0:
            w = ctx.writer()
            w.write({"id": f"dist-{ctx.shard}", "problem": f"all_reduce over {world} ranks = {t.item()}",
                     "stage": ctx.stage_name})
        return {"world_size": world, "allreduce_sum": t.item(), "ranks": hosts,
                "rdzv_run_id": os.environ.get("TORCHELASTIC_RUN_ID"), "master_addr": os.environ.get("MASTER_ADDR"),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    finally:
        dist.destroy_process_group()
