"""SFT batch arithmetic with the processes the job will really start: the gpu-multinode template
launches `resources.gpus` (else the profile's `gpus_per_node`) ranks on each of `resources.nodes`
nodes, so the global batch must be world x micro batch x gradient accumulation for THAT world,
not for the `resources.gpus` the config-time check assumes."""

from __future__ import annotations

from typing import Any

from skymath.preflight.problems import Findings


def launched_world(spec: Any, profile: Any) -> tuple[int, int]:
    """(ranks per node, nodes) the gpu-multinode job of this stage starts."""
    res = spec.resources
    if (spec.shape or "gpu-multinode") != "gpu-multinode":
        return max(1, res.gpus), 1
    per_node = res.gpus or profile.gpus_per_node
    return max(1, per_node), res.nodes


def check_sft_batch(cfg: Any, profile: Any) -> Findings:
    from skymath.train.params import plan_batch

    f = Findings()
    for name, spec in cfg.stages.items():
        if spec.kind != "sft":
            continue
        p = spec.params
        per_node, nodes = launched_world(spec, profile)
        world = per_node * nodes
        try:
            micro, accum = plan_batch(p.global_batch_size, world, p.micro_batch_size, p.grad_accum)
        except ValueError as e:
            micro = p.micro_batch_size or 1
            good = world * micro * max(1, round(p.global_batch_size / (world * micro)))
            f.add("sft", name, f"{nodes} node(s) x {per_node} ranks per node = {world} processes: {e}",
                  f"set stages.{name}.params.global_batch_size to a multiple of {world * micro} (e.g. {good}), "
                  f"or change micro_batch_size / grad_accum, or resources.gpus / nodes")
            continue
        f.note(f"{name}: {world} processes x micro batch {micro} x accumulation {accum} = "
               f"global batch {p.global_batch_size}")
    return f
