"""Typed params of an `sft` stage and the global-batch arithmetic (light imports only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from skymath.stages import StageParams
from skymath.train.presets import apply_preset


class SFTParams(StageParams):
    """One SFT stage (stage 1: base -> intermediate, stage 2: intermediate -> final)."""

    model: str = "tiny:smollm2"  # tiny:smollm2 | local dir | hub name | stage:<sft stage>
    preset: Literal["llama2-7b", "mistral-7b", "deepseekmath-7b"] | None = None
    data_stages: list[str] | None = None  # default: dependencies whose kind is not sft
    max_samples: int | None = Field(None, ge=1)  # demo: train on the first N records only
    prompt_style: Literal["alpaca", "chat"] = "alpaca"
    lr: float = Field(2e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    global_batch_size: int = Field(32, ge=1)
    micro_batch_size: int | None = Field(None, ge=1)
    grad_accum: int | None = Field(None, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_length: int = Field(2048, ge=8)
    truncation: Literal["truncate", "drop"] = "truncate"
    packing: bool = True
    group_by_length: bool = True  # fallback batching when packing is off
    scheduler: Literal["cosine", "linear"] = "cosine"
    bf16: bool | None = None  # None: on when a bf16-capable GPU is present
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # null | zero2 | zero3 | path to a JSON config
    attn_implementation: str | None = None  # None: flash_attention_2 if installed on GPU, else sdpa
    max_steps: int | None = Field(None, ge=1)
    save_steps: int = Field(500, ge=1)
    save_every_minutes: float | None = Field(None, gt=0)  # also save when this much time passed since the last save
    keep_checkpoints: int = Field(2, ge=1)
    prune_after_success: bool = True  # drop optimizer/ZeRO states of kept checkpoints once the model is saved
    seed: int | None = None  # None: run.seed
    logging_steps: int = Field(10, ge=1)
    eval_steps: int | None = Field(None, ge=1)  # validation loss interval; None: every save_steps
    val_samples: int | None = Field(512, ge=0)  # about this many records held out (0/None: no validation)
    val_fraction: float | None = Field(None, ge=0, lt=1)  # instead of val_samples: this fraction of the records
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=lambda: ["tensorboard"])
    wandb_project: str | None = None  # default: $WANDB_PROJECT, else "skymath"
    dataloader_workers: int = Field(0, ge=0)
    ddp_timeout: int = Field(3600, ge=60)  # seconds a collective (barrier, all-reduce) may wait

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return apply_preset(dict(data))
        return data


def plan_batch(global_batch: int, world: int, micro: int | None, accum: int | None) -> tuple[int, int]:
    """(micro, accum) with world x micro x accum == global, or ValueError naming the numbers.

    Unset values are derived: accum from micro, micro from accum, or (neither set) the largest
    micro-batch <= 4 that divides the per-process batch."""
    if micro is not None and accum is not None:
        if world * micro * accum != global_batch:
            raise ValueError(f"global_batch_size {global_batch} != {world} processes x micro_batch_size {micro} "
                             f"x grad_accum {accum} = {world * micro * accum}")
        return micro, accum
    if global_batch % world:
        raise ValueError(f"global_batch_size {global_batch} is not divisible by {world} processes")
    per_proc = global_batch // world
    if micro is not None:
        if per_proc % micro:
            raise ValueError(f"global_batch_size {global_batch} / ({world} processes x micro_batch_size {micro}) "
                             f"is not an integer: no grad_accum fits")
        return micro, per_proc // micro
    if accum is not None:
        if per_proc % accum:
            raise ValueError(f"global_batch_size {global_batch} / ({world} processes x grad_accum {accum}) "
                             f"is not an integer: no micro_batch_size fits")
        return per_proc // accum, accum
    micro = max(m for m in range(1, min(4, per_proc) + 1) if per_proc % m == 0)
    return micro, per_proc // micro


def planned_world(nodes: int, gpus_per_node: int) -> int:
    """Processes a stage will run: one per GPU, or one per node on CPU."""
    return nodes * max(gpus_per_node, 1)
