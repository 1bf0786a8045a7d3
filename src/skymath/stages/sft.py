"""`kind: sft` — one supervised fine-tuning stage (stage 1: base -> intermediate on normal problems;
stage 2: `model: stage:sft-1` -> final on hard problems).

Runs as one shard on `gpu-multinode` (srun one task per node -> torchrun, see
skymath.train.launch); single process on a laptop. Data: the parts written by the `tokenize`
stage(s) it depends on, memory-mapped by every rank; a single-process run may depend on record
stages directly and then tokenizes them itself with the same code (into its work dir, removed
after success). Cooperative stop: on SIGTERM/SIGUSR2 the trainer
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
    data = data_stage_names(cfg, name)
    if not data:
        raise UserError(f"{where}.depends_on: no data stage (a non-sft dependency or params.data_stages)")
    toks = [d for d in data if cfg.stages[d].kind == "tokenize"]
    if toks and len(toks) != len(data):
        raw = [d for d in data if d not in toks]
        raise UserError(f"{where}.depends_on: {raw} are record stages next to tokenize stage(s) {toks}: "
                        f"let the tokenize stage depend on them instead")
    if not toks and world > 1:
        raise UserError(f"{where}.depends_on: {world} processes would wait while one tokenizes {data}: add a "
                        f"tokenize stage (kind: tokenize, depends_on: {data}) and depend on it")
    from skymath.stages.tokenize import check_consumers

    check_consumers(cfg, source)
    if p.deepspeed and p.deepspeed not in ("zero2", "zero3") and not Path(p.deepspeed).is_file():
        raise UserError(f"{where}.params.deepspeed: {p.deepspeed!r} is not zero2, zero3 or an existing JSON file")


def tokenize_stages(cfg: Any, name: str) -> list[str]:
    """The tokenize stages this sft stage memory-maps (empty: it trains on record stages directly)."""
    return [d for d in data_stage_names(cfg, name) if cfg.stages[d].kind == "tokenize"]


def _inprocess_part(ctx: Any, stages: list[str]) -> Path:
    """One process, raw record stages: tokenize here with the tokenize stage's own code (small runs)."""
    from transformers import AutoTokenizer

    from skymath.models import resolve_model
    from skymath.stages.tokenize import data_spec, input_records, tokenize_files, val_threshold
    from skymath.train.data import DataSettings
    from skymath.train.tokenized import Fingerprints, read_meta

    spec = data_spec(ctx.config, ctx.stage_name)
    files, total = input_records(ctx.run, ctx.config, stages)
    fraction = val_threshold(spec, files, total)
    part = ctx.work_dir / "tokenized"
    meta = read_meta(part)
    if meta is not None:
        tok = AutoTokenizer.from_pretrained(resolve_model(spec["tokenizer"], run_root=ctx.run.root))
        want = Fingerprints.of(tok, DataSettings(spec["max_length"], spec["truncation"], spec["prompt_style"]))
        from dataclasses import asdict

        if (meta.get("fingerprints") == asdict(want) and meta.get("val_fraction") == fraction
                and meta.get("seed") == spec["seed"] and meta.get("inputs") == [str(f) for f in files]):
            return part
    ctx.log.info("tokenizing %d record shard(s) in this process (one process: nobody waits)", len(files))
    with ctx.progress(desc=f"{ctx.stage_name} tokenize", unit="rec") as bar:
        tokenize_files(files, spec, fraction, part, ctx.run.root, progress=bar)
    return part


def run(ctx: Any) -> dict[str, Any]:
    import shutil

    from skymath.models import resolve_model, stage_model_dir
    from skymath.stages.tokenize import part_path
    from skymath.train.launch import dist_env
    from skymath.train.sft import TrainingStopped, TrainJob, run_training

    p: SFTParams = ctx.params
    cfg, name = ctx.config, ctx.stage_name
    toks = tokenize_stages(cfg, name)
    inprocess = not toks
    if toks:
        parts: list[Path] = []
        for t in toks:
            n = cfg.stages[t].num_shards
            if not ctx.run.stage_complete(t, n):
                raise UserError(f"stage {name}: tokenize stage {t!r} is incomplete "
                                f"(missing shards {ctx.run.missing_shards(t, n)[:10]})")
            parts.extend(part_path(ctx.run, t, i) for i in range(n))
    else:
        world = dist_env().world_size
        if world > 1:
            raise UserError(f"stage {name}: {world} processes train on raw records; add a tokenize stage "
                            f"(kind: tokenize, depends_on: {data_stage_names(cfg, name)}) and depend on it, so no "
                            f"rank tokenizes while the others wait")
        parts = [_inprocess_part(ctx, data_stage_names(cfg, name))]
    job = TrainJob(
        params=p,
        model_path=resolve_model(p.model, run_root=ctx.run.root),
        parts=parts,
        model_out=stage_model_dir(ctx.run.root, name),
        work_dir=ctx.work_dir,
        log_dir=ctx.stage_dir / "tensorboard",
        seed=p.seed if p.seed is not None else cfg.run.seed,
        stop_fn=ctx.stop_requested,
        run_name=f"{cfg.run.name}/{name}",
    )
    try:
        metrics = run_training(job)
    except TrainingStopped as e:
        # every rank agreed to stop: flag it on this rank too, so the worker records the shard as
        # stopped (exit 143, no .done) rather than done. (Raising skymath.worker.Stopped would not
        # match the class the worker catches when it runs as `python -m skymath.worker`.)
        ctx.stop_event.set()
        ctx.log.warning("stopped: checkpoint saved at step %d (%s); rerun to resume", e.step, e.checkpoint)
        return {"stopped_at_step": e.step, "checkpoint": e.checkpoint}
    if inprocess:
        shutil.rmtree(ctx.work_dir / "tokenized", ignore_errors=True)  # scratch of this stage only
    return {**metrics, "complete": True}  # trained to the end, even if a stop came in the last step
