"""`kind: sft` — one supervised fine-tuning stage (stage 1: base -> intermediate on normal problems;
stage 2: `model: stage:sft-1` -> final on hard problems).

Runs as one shard on `gpu-multinode` (srun one task per node -> torchrun, see
skymath.train.launch); single process on a laptop. Cooperative stop: on SIGTERM/SIGUSR2 the trainer
checkpoints at the next optimizer step and this stage raises `Stopped`, so the shard is not marked
done and a rerun resumes. Output: `stages/<name>/model` (HF format, model + tokenizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skymath.errors import UserError
from skymath.train.params import SFTParams, plan_batch, planned_world

KIND = "sft"
SHAPE = "gpu-multinode"
SINGLE_SHARD = True
COOPERATIVE_STOP = True


class Params(SFTParams):
    pass


def data_stage_names(cfg: Any, name: str) -> list[str]:
    """Stages whose records train this stage: params.data_stages, else non-sft dependencies."""
    spec = cfg.stages[name]
    if spec.params.data_stages is not None:
        return list(spec.params.data_stages)
    return [d for d in spec.depends_on if cfg.stages[d].kind != KIND]


def check_config(cfg: Any, name: str, source: str) -> None:
    """Fail at load time (before any job is submitted) on a batch or chaining mistake."""
    spec = cfg.stages[name]
    p: SFTParams = spec.params
    where = f"{source}: stages.{name}"
    nodes, gpus = spec.resources.nodes, spec.resources.gpus
    world = planned_world(nodes, gpus)
    try:
        plan_batch(p.global_batch_size, world, p.micro_batch_size, p.grad_accum)
    except ValueError as e:
        per_node = f"{gpus} GPUs" if gpus else "1 process (no GPU)"
        raise UserError(f"{where}.params: {e} (resources: {nodes} node(s) x {per_node} per node)") from None
    if p.model.startswith("stage:"):
        src = p.model.split(":", 1)[1]
        if src not in cfg.stages:
            raise UserError(f"{where}.params.model: {p.model!r} names no stage of this pipeline")
        if cfg.stages[src].kind != KIND:
            raise UserError(f"{where}.params.model: {p.model!r} is a {cfg.stages[src].kind} stage, not sft")
        if src not in spec.depends_on:
            raise UserError(f"{where}.depends_on: must include {src!r} (params.model is {p.model!r})")
    for d in p.data_stages or []:
        if d not in spec.depends_on:
            raise UserError(f"{where}.params.data_stages: {d!r} is not in depends_on {spec.depends_on}")
    if not data_stage_names(cfg, name):
        raise UserError(f"{where}.depends_on: no data stage (a non-sft dependency or params.data_stages)")
    if p.deepspeed and p.deepspeed not in ("zero2", "zero3") and not Path(p.deepspeed).is_file():
        raise UserError(f"{where}.params.deepspeed: {p.deepspeed!r} is not zero2, zero3 or an existing JSON file")


def run(ctx: Any) -> dict[str, Any]:
    from skymath.models import resolve_model, stage_model_dir
    from skymath.train.sft import TrainingStopped, TrainJob, run_training

    p: SFTParams = ctx.params
    paths: list[Path] = []
    for stage in data_stage_names(ctx.config, ctx.stage_name):
        paths.extend(ctx.input_paths(stage))
    job = TrainJob(
        params=p,
        model_path=resolve_model(p.model, run_root=ctx.run.root),
        data_paths=paths,
        model_out=stage_model_dir(ctx.run.root, ctx.stage_name),
        work_dir=ctx.work_dir,
        log_dir=ctx.stage_dir / "tensorboard",
        seed=p.seed if p.seed is not None else ctx.config.run.seed,
        stop_fn=ctx.stop_requested,
    )
    try:
        return run_training(job)
    except TrainingStopped as e:
        # every rank agreed to stop: flag it on this rank too, so the worker records the shard as
        # stopped (exit 143, no .done) rather than done. (Raising skymath.worker.Stopped would not
        # match the class the worker catches when it runs as `python -m skymath.worker`.)
        ctx.stop_event.set()
        ctx.log.warning("stopped: checkpoint saved at step %d (%s); rerun to resume", e.step, e.checkpoint)
        return {"stopped_at_step": e.step, "checkpoint": e.checkpoint}
