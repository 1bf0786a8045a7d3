"""Stage `synth`: augment seed problems with MetaMath, Evol-Instruct and Xwin-style methods.

Stage 1 and stage 2 (hard seeds) are the same kind, fed different seeds. Shards split the seeds
deterministically; record ids are stable from (stage, seed, method, sub-method, sample, depth),
so a restarted shard skips finished units, and the response cache means no request that already
succeeded is paid for again. See skymath.synth.engine.

`target_records`: the configured per-seed counts become proportions, scaled per shard from the
yields the stage measures on its earlier shards (skymath.synth.target); summary.json says what
was reached. Without it, the counts are used as given.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from skymath.errors import UserError
from skymath.stages import StageParams
from skymath.synth.params import EvolParams, MetaMathParams, MixMode, XwinParams
from skymath.synth.target import ACCEPTANCE_KEYS

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
    # reach this many records over the whole stage (per-seed counts scaled from measured yields)
    target_records: int | None = Field(None, ge=1)
    target_tolerance: float = Field(0.02, gt=0, lt=1)  # stated in summary.json: |produced/target - 1|
    max_scale: float = Field(20.0, gt=0)  # never more than this x the configured per-seed counts
    # acceptance probabilities per request step (prior for the target and for `skymath estimate`);
    # keys: metamath.<sub>, evol.evolve, evol.answer, xwin.refine, xwin.answer
    yields: dict[str, float] = Field(default_factory=dict)

    @field_validator("yields")
    @classmethod
    def _yields(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if k not in ACCEPTANCE_KEYS:
                raise ValueError(f"unknown yield {k!r} (known: {', '.join(ACCEPTANCE_KEYS)})")
            if not 0 <= x <= 1:
                raise ValueError(f"yields.{k}: an acceptance probability between 0 and 1")
        return v

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


def after_shard_done(ctx) -> None:
    """When the last shard finishes: summary.json with the records produced (vs target_records and
    its tolerance) and the measured acceptance per step (feed it back as `yields:` to estimate)."""
    import json

    from skymath.records import atomic_write_text
    from skymath.synth.target import YIELD_FILE, ShardYield

    run, name, k, p = ctx.run, ctx.stage_name, ctx.num_shards, ctx.params
    if not run.stage_complete(name, k):
        return
    produced = sum(int((run.read_marker(run.done_path(name, i)) or {}).get("records", 0)) for i in range(k))
    steps: dict[str, list[int]] = {}
    units: dict[str, int] = {}
    records: dict[str, int] = {}
    scales = []
    for i in range(k):
        v = ShardYield.load(ctx.stage_dir / run.shard_name(i) / YIELD_FILE)
        if v is None:
            continue
        scales.append(v.scale or 0.0)
        for key, (tried, ok) in v.steps.items():
            c = steps.setdefault(key, [0, 0])
            c[0] += tried
            c[1] += ok
        for s, n in v.finished.items():
            units[s] = units.get(s, 0) + n
            records[s] = records.get(s, 0) + v.records.get(s, 0)
    summary = {
        "records": produced,
        "target_records": p.target_records,
        "deviation": None if not p.target_records else round(produced / p.target_records - 1, 4),
        "within_tolerance": None if not p.target_records else abs(produced / p.target_records - 1) <= p.target_tolerance,
        "tolerance": p.target_tolerance,
        "scale": {"min": min(scales, default=None), "max": max(scales, default=None)},
        "acceptance": {key: round(ok / tried, 4) for key, (tried, ok) in sorted(steps.items()) if tried},
        "records_per_unit": {s: round(records.get(s, 0) / n, 4) for s, n in sorted(units.items()) if n},
        "units": units,
    }
    atomic_write_text(ctx.stage_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    if p.target_records and not summary["within_tolerance"]:
        ctx.log.warning("stage %s produced %d records for a target of %d (%+.1f%%, tolerance %.1f%%)",
                        name, produced, p.target_records, 100 * summary["deviation"], 100 * p.target_tolerance)
