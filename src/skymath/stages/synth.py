"""Stage `synth`: augment seed problems with MetaMath, Evol-Instruct and Xwin-style methods.

Stage 1 and stage 2 (hard seeds) are the same kind, fed different seeds. Shards split the seeds
deterministically; record ids are stable from (stage, seed, method, sub-method, sample, depth),
so a restarted shard skips finished units, and the response cache means no request that already
succeeded is paid for again. See skymath.synth.engine.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from skymath.errors import UserError
from skymath.stages import StageParams
from skymath.synth.params import EvolParams, MetaMathParams, MixMode, XwinParams

KIND = "synth"
SHAPE = "cpu-array"
COOPERATIVE_STOP = True  # finish in-flight requests (already paid for) and flush on SIGTERM
METHODS = ("metamath", "evol", "xwin")


class Params(StageParams):
    # relative weights of the methods; "split": each seed goes to one method (smooth weighted
    # round-robin over the seed list, exact even for a dozen seeds); "all": every seed to every method
    mix: dict[str, float] = Field(default_factory=lambda: {"metamath": 1.0, "evol": 2.0, "xwin": 1.0})
    mix_mode: MixMode = "split"
    metamath: MetaMathParams = Field(default_factory=MetaMathParams)
    evol: EvolParams = Field(default_factory=EvolParams)
    xwin: XwinParams = Field(default_factory=XwinParams)
    max_seeds: int | None = Field(None, ge=1)  # first N seeds of the input (before sharding)
    levels: list[int] | None = None  # keep only these MATH levels (stage 2: [4, 5])
    temperature: float | None = Field(None, ge=0)  # default: llm.temperature
    max_tokens: int | None = Field(None, ge=1)  # default: llm.max_tokens
    few_shot: bool = True  # two worked examples in the answer prompt
    drop_truncated: bool = True  # quarantine responses cut by max_tokens
    match_gold: bool = True  # MetaMath: keep only answers equal to the known one
    min_problem_chars: int = Field(20, ge=1)
    min_length_ratio: float = Field(0.3, ge=0, le=1)  # an evolved problem shorter than this x parent fails
    failure_tolerance: float | None = Field(None, ge=0, le=1)  # default: llm.failure_tolerance
    unit_concurrency: int | None = Field(None, ge=1)  # units in flight; default 2 x llm.concurrency
    stop_grace_s: float = Field(20.0, ge=0)  # on stop: wait this long for in-flight requests

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        for k, w in v.items():
            if k not in METHODS:
                raise ValueError(f"unknown method {k!r} (known: {', '.join(METHODS)})")
            if w < 0:
                raise ValueError(f"mix.{k}: weight must be >= 0")
        if not any(w > 0 for w in v.values()):
            raise ValueError("at least one method needs a positive weight")
        return v


def check_config(cfg, stage_name: str, source: str) -> None:
    spec = cfg.stages[stage_name]
    if not spec.depends_on:
        raise UserError(f"{source}: stages.{stage_name}.depends_on: a synth stage needs a seed stage as input")
    svc = cfg.llm.service
    if svc is not None:
        if svc not in cfg.stages:
            raise UserError(f"{source}: llm.service: no stage named {svc!r}")
        if svc not in spec.services:
            raise UserError(f"{source}: stages.{stage_name}.services: add {svc!r} (llm.service names it), "
                            "so the executor starts the servers before this stage")


def run(ctx) -> dict:
    from skymath.synth.engine import run_shard

    return run_shard(ctx)
