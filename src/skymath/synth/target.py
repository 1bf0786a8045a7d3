"""Reaching a target record count (`target_records`) with shards that cannot wait for each other.

The configured per-seed counts (metamath samples, evol trajectories, xwin samples) give the
*proportions*; a shard multiplies them by a scale chosen when it starts, so that the stage as a
whole expects `target_records`. What a unit yields (records per unit: answers that match the gold,
evolutions that survive, ...) is unknown before the run, so the scale comes from yields measured
by the stage's own shards, recorded in the run directory:

- every shard writes `stages/<stage>/shard-NNNNN/yield.json` (its frozen plan, the units it
  finished and the records they gave, per slot, plus per-step acceptance counts) now and then
  and when it ends;
- a starting shard, under the stage lock, reads them all. Yield per slot = measured records /
  finished units over every shard, shrunk toward the prior (`yields`, acceptance probabilities)
  by `PSEUDO_UNITS` pseudo-observations. Shards already planned are expected to give their
  records so far plus their unfinished units x the yield; the rest of the target is spread over
  the seeds of the shards not planned yet, this one included, and the scale is fixed in
  `plan.json` (a restarted shard replans nothing: its unit ids stay the same).

So the first wave of an array (the throttle: 64 of 1,024 shards) runs on the prior; every later
shard corrects for what the earlier ones actually produced. The last wave's own randomness is
what remains: `after_shard_done` writes summary.json with the target, the records produced, the
deviation and whether it is within `target_tolerance`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PSEUDO_UNITS = 3.0  # how many units' worth of belief the prior yield carries (a shard measures thousands)
YIELD_FILE = "yield.json"
PLAN_FILE = "plan.json"

# Acceptance probabilities per request step, the estimator's and the controller's prior. These are
# assumptions, not measurements: GPT-4-1106-preview solves roughly 60-65% of MATH (so MetaMath's
# gold-matched answers survive about that often; backward questions less), and Evol/Xwin rewrites
# pass the filters most of the time. A run measures the real ones (summary.json `acceptance`),
# which can be passed back as `yields:` to the next estimate.
DEFAULT_ACCEPTANCE: dict[str, float] = {
    "metamath.answer_aug": 0.6,
    "metamath.rephrase": 0.55,
    "metamath.fobar": 0.45,
    "metamath.self_verification": 0.45,
    "evol.evolve": 0.9,  # an evolution passes the elimination filters
    "evol.answer": 0.95,  # its chain-of-thought answer is usable
    "xwin.refine": 0.95,
    "xwin.answer": 0.9,
}
ACCEPTANCE_KEYS = tuple(DEFAULT_ACCEPTANCE)


def slot_of(method: str, sub_method: str) -> str:
    """The planning grain: metamath.<sub>, evol.trajectory, xwin.refine."""
    return f"{method}.{sub_method}"


def acceptance(yields: dict[str, float] | None) -> dict[str, float]:
    return {**DEFAULT_ACCEPTANCE, **(yields or {})}


def expected_per_unit(slot: str, acc: dict[str, float], max_steps: int) -> tuple[float, float, float]:
    """(expected records, expected requests, max records) of one unit of `slot`."""
    method, sub = slot.split(".", 1)
    if method == "metamath":
        reqs = 2.0 if sub == "rephrase" else 1.0
        return acc[slot], reqs, 1.0
    if method == "evol":
        pe, pa = acc["evol.evolve"], acc["evol.answer"]
        q = pe * pa  # one step survives: evolution kept and answered
        records = sum(q ** d for d in range(1, max_steps + 1))
        requests = sum(q ** (d - 1) for d in range(1, max_steps + 1)) * (1 + pe)
        return records, requests, float(max_steps)
    if method == "xwin":
        pr, pa = acc["xwin.refine"], acc["xwin.answer"]
        return pr * pa, 1 + pr, 1.0
    raise ValueError(f"unknown slot {slot!r}")


# ---- scaling a shard's plan -------------------------------------------------------------------------
def base_counts(units) -> dict[str, dict[str, int]]:
    """seed id -> slot -> units planned at scale 1 (the configured counts)."""
    out: dict[str, dict[str, int]] = {}
    for u in units:
        c = out.setdefault(u.seed.id, {})
        s = slot_of(u.method, u.sub_method)
        c[s] = c.get(s, 0) + 1
    return out


def scale_units(units, scale: float):
    """The shard's units at `scale` x the configured counts: sample indices 0..n-1 per (seed, slot),
    n from error diffusion along the shard's seed order, so the shard's total per slot is
    round(scale x configured) while each seed gets floor or ceil of its share."""
    from skymath.synth.methods import Unit

    if scale == 1.0:
        return list(units)
    first: dict[tuple[str, str], Any] = {}
    counts: dict[tuple[str, str], int] = {}
    order: list[tuple[str, str]] = []
    for u in units:
        key = (u.seed.id, slot_of(u.method, u.sub_method))
        if key not in first:
            first[key] = u
            order.append(key)
        counts[key] = counts.get(key, 0) + 1
    acc: dict[str, float] = {}
    emitted: dict[str, int] = {}
    out = []
    for key in order:
        slot = key[1]
        acc[slot] = acc.get(slot, 0.0) + counts[key] * scale
        n = int(math.floor(acc[slot] + 1e-9)) - emitted.get(slot, 0)
        emitted[slot] = emitted.get(slot, 0) + n
        u0 = first[key]
        out.extend(Unit(u0.seed, u0.method, u0.sub_method, i) for i in range(n))
    return out


# ---- what the shards tell each other --------------------------------------------------------------
@dataclass
class ShardYield:
    """One shard's yield file: its plan, and what its finished units gave."""

    shard: int
    seeds: int = 0
    scale: float | None = None  # None: not planned yet
    planned: dict[str, int] = field(default_factory=dict)  # slot -> units planned
    finished: dict[str, int] = field(default_factory=dict)  # slot -> units finished (ok or rejected)
    records: dict[str, int] = field(default_factory=dict)  # slot -> records those units gave
    steps: dict[str, list[int]] = field(default_factory=dict)  # acceptance key -> [tried, accepted]
    done: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def load(cls, path: Path) -> ShardYield | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, TypeError):
            return None


def measured_yields(views: list[ShardYield], prior: dict[str, float]) -> dict[str, float]:
    """Records per unit per slot over all shards, shrunk toward the prior by PSEUDO_UNITS."""
    rec: dict[str, float] = {}
    fin: dict[str, float] = {}
    for v in views:
        for s, n in v.finished.items():
            fin[s] = fin.get(s, 0) + n
            rec[s] = rec.get(s, 0) + v.records.get(s, 0)
    return {s: (rec.get(s, 0.0) + y0 * PSEUDO_UNITS) / (fin.get(s, 0.0) + PSEUDO_UNITS) for s, y0 in prior.items()}


@dataclass
class ScaleDecision:
    scale: float
    expected_from_planned: float
    unplanned_seeds: int
    base_per_seed: float
    yields: dict[str, float]
    capped: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def decide_scale(target: int, my_base: dict[str, int], my_seeds: int, others: list[ShardYield],
                 unplanned_other_seeds: int, prior: dict[str, float], max_scale: float) -> ScaleDecision:
    """The scale that makes the stage expect `target` records, given what the planned shards
    will produce and the seeds still to plan (this shard's and the unplanned others')."""
    y = measured_yields(others, prior)
    planned_expect = 0.0
    for v in others:
        if v.scale is None:
            continue
        got = sum(v.records.values())
        if v.done:
            planned_expect += got
        else:
            planned_expect += got + sum(max(0, n - v.finished.get(s, 0)) * y.get(s, 0.0) for s, n in v.planned.items())
    base_expect = sum(n * y.get(s, 0.0) for s, n in my_base.items())
    per_seed = base_expect / my_seeds if my_seeds else 0.0
    denom = per_seed * (my_seeds + unplanned_other_seeds)
    if denom <= 0:
        scale = 0.0
    else:
        scale = max(0.0, (target - planned_expect) / denom)
    capped = scale > max_scale
    return ScaleDecision(min(scale, max_scale), planned_expect, my_seeds + unplanned_other_seeds, per_seed, y, capped)


def seeds_per_shard(n_seeds: int, num_shards: int) -> list[int]:
    """How many seeds `ShardContext.my_slice` gives each shard."""
    return [((n_seeds * (i + 1)) // num_shards) - ((n_seeds * i) // num_shards) for i in range(num_shards)]


def plan_scale(ctx, units, n_seeds_total: int, my_seeds: int, prior_records: dict[str, float]) -> dict[str, Any]:
    """This shard's frozen plan: read plan.json, or decide the scale under the stage lock from the
    yield files of the other shards and write plan.json + a first yield.json (so the next shard
    to start sees this plan)."""
    from skymath.records import atomic_write_text

    p = ctx.params
    work = Path(ctx.work_dir)
    plan_path = work / PLAN_FILE
    if plan_path.exists():
        return json.loads(plan_path.read_text(encoding="utf-8"))
    per_shard = seeds_per_shard(n_seeds_total, ctx.num_shards)
    my_base: dict[str, int] = {}
    for u in units:
        s = slot_of(u.method, u.sub_method)
        my_base[s] = my_base.get(s, 0) + 1
    with ctx.run.stage_lock(ctx.stage_name):
        if plan_path.exists():
            return json.loads(plan_path.read_text(encoding="utf-8"))
        others: list[ShardYield] = []
        unplanned = 0
        for i in range(ctx.num_shards):
            if i == ctx.shard:
                continue
            v = ShardYield.load(ctx.stage_dir / ctx.run.shard_name(i) / YIELD_FILE)
            if v is None or v.scale is None:
                unplanned += per_shard[i]
                if v is None:
                    continue
            others.append(v)
        d = decide_scale(p.target_records, my_base, my_seeds, others, unplanned, prior_records, p.max_scale)
        plan = {"scale": d.scale, "target_records": p.target_records, "decision": d.to_dict(),
                "planned_units": {s: n for s, n in my_base.items()}}
        atomic_write_text(plan_path, json.dumps(plan, indent=1) + "\n")
        scaled = scale_units(units, d.scale)
        planned: dict[str, int] = {}
        for u in scaled:
            s = slot_of(u.method, u.sub_method)
            planned[s] = planned.get(s, 0) + 1
        atomic_write_text(work / YIELD_FILE, ShardYield(ctx.shard, my_seeds, d.scale, planned).to_json())
        return plan


def prior_records_per_unit(params) -> dict[str, float]:
    """Expected records per unit for every slot a synth stage can plan, from its `yields`."""
    from skymath.synth.params import METAMATH_SUBS

    acc = acceptance(params.yields)
    slots = [f"metamath.{s}" for s in METAMATH_SUBS] + ["evol.trajectory", "xwin.refine"]
    return {s: expected_per_unit(s, acc, params.evol.max_steps)[0] for s in slots}


def step_counts(entry: dict) -> dict[str, list[int]]:
    """Per-step [tried, accepted] of one finished unit (from its unit-log entry), for the acceptance
    probabilities the estimator uses."""
    method, sub, n = entry["method"], entry["sub_method"], len(entry["records"])
    rejected = entry.get("rejected") or []
    reason = rejected[0].get("reason", "") if rejected else ""
    if method == "metamath":
        return {f"metamath.{sub}": [1, int(n > 0)]}
    if method == "evol":
        stopped = bool(rejected)
        answered_fail = stopped and "unsolvable" in reason
        evolve = [n + int(stopped), n + int(answered_fail)]
        return {"evol.evolve": evolve, "evol.answer": [evolve[1], n]}
    if method == "xwin":
        refined = n > 0 or (bool(rejected) and not reason.startswith("unusable refined problem"))
        return {"xwin.refine": [1, int(refined)], "xwin.answer": [int(refined), int(n > 0)]}
    return {}
