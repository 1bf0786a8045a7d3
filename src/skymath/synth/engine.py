"""One synthesis shard: plan units, skip finished ones, run the rest concurrently, account.

Crash safety: records are appended to the shard's `.partial` and flushed BEFORE the unit is logged
as finished in `work_dir/units.jsonl`; responses are in the SQLite cache the moment they arrive.
So after a SIGKILL a rerun skips logged units, redoes the others from the cache (free) and the
writer drops ids already written: exact ids, no duplicates, nothing paid twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skymath.errors import StageFailed
from skymath.records import DuplicateIdError, Record, atomic_write_text, write_jsonl
from skymath.synth.accounting import add_totals
from skymath.synth.client import LLMClient
from skymath.synth.methods import Outcome, Settings, Unit, get_methods
from skymath.synth.methods.base import Caller, Method, RequestFailed
from skymath.synth.target import (
    YIELD_FILE,
    ShardYield,
    plan_scale,
    prior_records_per_unit,
    scale_units,
    slot_of,
    step_counts,
)

log = logging.getLogger("skymath.synth")
FINAL = ("ok", "rejected")
TEXT_LIMIT = 4000
YIELD_EVERY_S = 20.0  # how often a running shard tells the others what its units yield


# ---- planning (pure, deterministic) ---------------------------------------------------------------
def select_seeds(records: list[Record], levels: list[int] | None, max_seeds: int | None) -> list[Record]:
    """The seeds this stage synthesizes from. Two seeds with one id would share their units (and
    one would be lost), so a repeated id is an error naming both, never a skip."""
    seen: dict[str, int] = {}
    out = []
    for i, r in enumerate(records):
        first = seen.setdefault(r.id, i)
        if first != i:
            raise DuplicateIdError(f"two seeds share the id {r.id!r}: input records #{first + 1} "
                                   f"(source {records[first].source}) and #{i + 1} (source {r.source})")
        if levels is not None and r.level not in levels:
            continue
        if max_seeds is None or len(out) < max_seeds:
            out.append(r)
    return out


def assign_methods(n: int, mix: dict[str, float], mode: str) -> list[list[str]]:
    """Methods per seed position. "split": smooth weighted round-robin (nginx), exact proportions
    over any prefix; "all": every method with a positive weight for every seed."""
    active = [(m, w) for m, w in mix.items() if w > 0]
    if mode == "all":
        return [[m for m, _ in active] for _ in range(n)]
    total = sum(w for _, w in active)
    current = {m: 0.0 for m, _ in active}
    out = []
    for _ in range(n):
        for m, w in active:
            current[m] += w
        best = max(active, key=lambda mw: current[mw[0]])[0]
        current[best] -= total
        out.append([best])
    return out


def plan_units(seeds: list[Record], assigned: list[list[str]], methods: dict[str, Method]) -> list[Unit]:
    return [u for seed, ms in zip(seeds, assigned, strict=True) for m in ms for u in methods[m].plan(seed)]


# ---- the unit log ------------------------------------------------------------------------------------
class UnitLog:
    """Append-only JSONL of finished units; the latest line per unit wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: list[str] = []

    def load(self) -> dict[str, dict]:
        state: dict[str, dict] = {}
        if not self.path.exists():
            return state
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # torn last line after a crash
            with open(self.path, "r+b") as f:
                f.truncate(cut)
        for line in data[:cut].decode("utf-8", errors="replace").split("\n"):  # not splitlines(): U+2028
            try:
                e = json.loads(line)
                state[e["unit"]] = e
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        return state

    def add(self, entry: dict) -> None:
        self.pending.append(json.dumps(entry, ensure_ascii=False))

    def flush(self) -> None:
        if not self.pending:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("\n".join(self.pending) + "\n")
            f.flush()
        self.pending.clear()


def _entry(unit: Unit, out: Outcome) -> dict:
    status = "failed" if out.failure else ("ok" if out.records else "rejected")
    rejected = [{**r, "text": (r.get("text") or "")[:TEXT_LIMIT]} for r in out.rejected]
    return {"unit": unit.key, "status": status, "seed_id": unit.seed.id, "method": unit.method,
            "sub_method": unit.sub_method, "sample_index": unit.sample_index,
            "records": [r.id for r in out.records], "rejected": rejected, "failure": out.failure,
            "usage": out.usage}


# ---- running ------------------------------------------------------------------------------------------
async def drive(units: list[Unit], methods: dict[str, Method], client: LLMClient, settings: Settings,
                on_outcome: Callable[[Unit, Outcome], None], stop: Callable[[], bool],
                concurrency: int, grace_s: float) -> None:
    """Run units with `concurrency` workers; on stop, let in-flight units finish for up to grace_s."""
    it = iter(units)

    async def worker() -> None:
        for unit in it:
            if stop():
                return
            out = Outcome()
            caller = Caller(client, settings, out)
            try:
                await methods[unit.method].run(unit, caller)
            except RequestFailed as e:
                out.failure = {"reason": e.result.error, "attempts": e.result.attempts, "request": e.result.key}
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - one odd response must not end a 10-hour shard
                log.error("unit %s: %s", unit.key, traceback.format_exc())
                out.failure = {"reason": f"internal error: {type(e).__name__}: {e}", "attempts": 0,
                               "request": unit.key}
            on_outcome(unit, out)

    async with client.session():
        tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(units))))]
        all_done = asyncio.gather(*tasks)
        while not all_done.done():
            await asyncio.wait([all_done], timeout=0.5)
            if stop() and not all_done.done():
                await asyncio.wait([all_done], timeout=grace_s)
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                # units cut off by the stop are not failures: their ids were never written, so a
                # requeued shard redoes them (a CancelledError here would fail the shard instead)
                if all_done.done() and not all_done.cancelled():
                    all_done.exception()  # retrieved: no "exception was never retrieved" warning
                return
        if all_done.done() and not all_done.cancelled() and all_done.exception() is not None:
            raise all_done.exception()


def run_shard(ctx) -> dict[str, Any]:
    p = ctx.params
    llm = ctx.config.llm
    seeds = select_seeds(list(ctx.iter_inputs()), p.levels, p.max_seeds)
    assigned = assign_methods(len(seeds), p.mix, p.mix_mode)
    mine = ctx.my_slice(list(range(len(seeds))))
    my_seeds, my_assigned = [seeds[i] for i in mine], [assigned[i] for i in mine]
    settings = Settings(stage=ctx.stage_name, temperature=p.temperature, max_tokens=p.max_tokens,
                        few_shot=p.few_shot, drop_truncated=p.drop_truncated, match_gold=p.match_gold,
                        min_problem_chars=p.min_problem_chars, min_length_ratio=p.min_length_ratio)
    methods: dict[str, Method] = {name: cls(getattr(p, name), settings) for name, cls in get_methods().items()}
    units = plan_units(my_seeds, my_assigned, methods)
    scale = 1.0
    if p.target_records is not None:  # per-seed counts from the yields the stage has measured so far
        plan = plan_scale(ctx, units, len(seeds), len(my_seeds), prior_records_per_unit(p))
        scale = plan["scale"]
        units = scale_units(units, scale)

    work = Path(ctx.work_dir)
    unit_log = UnitLog(work / "units.jsonl")
    state = unit_log.load()
    todo = [u for u in units if state.get(u.key, {}).get("status") not in FINAL]
    writer = ctx.writer()
    usage_path = work / "usage.json"
    prev_usage = json.loads(usage_path.read_text()) if usage_path.exists() else {}

    client = LLMClient.for_context(ctx, cache_dir=work)
    counts = {"records": len(writer.existing_ids), "failed": 0, "rejected": 0}
    bar = ctx.progress(total=len(units), desc=f"{ctx.stage_name}[{ctx.shard}]", unit="unit",
                       initial=len(units) - len(todo))
    t0 = time.monotonic()
    last = {"flush": time.monotonic(), "postfix": 0.0, "yield": 0.0}
    planned_by_slot: dict[str, int] = {}
    for u in units:
        s = slot_of(u.method, u.sub_method)
        planned_by_slot[s] = planned_by_slot.get(s, 0) + 1
    yields = ShardYield(ctx.shard, len(my_seeds), scale, planned_by_slot)

    def count_yield(entry: dict) -> None:
        if entry["status"] not in FINAL:
            return
        s = slot_of(entry["method"], entry["sub_method"])
        yields.finished[s] = yields.finished.get(s, 0) + 1
        yields.records[s] = yields.records.get(s, 0) + len(entry["records"])
        for k, (tried, ok) in step_counts(entry).items():
            c = yields.steps.setdefault(k, [0, 0])
            c[0] += tried
            c[1] += ok

    for u in units:
        if u.key in state:
            count_yield(state[u.key])

    def write_yield(done: bool = False) -> None:
        yields.done = done
        try:
            atomic_write_text(work / YIELD_FILE, yields.to_json())
        except OSError as e:  # the yield file steers later shards; never worth failing this one
            log.warning("could not write %s: %s", work / YIELD_FILE, e)
        last["yield"] = time.monotonic()

    def flush() -> None:
        writer.flush()  # records first: a logged unit always has its records on disk
        unit_log.flush()
        atomic_write_text(usage_path, json.dumps(add_totals(prev_usage, client.usage_totals())))
        if time.monotonic() - last["yield"] > YIELD_EVERY_S:
            write_yield()
        ctx.report_progress(records=counts["records"], failed=counts["failed"],
                            usage=add_totals(prev_usage, client.usage_totals()))  # skymath status --watch
        last["flush"] = time.monotonic()

    def on_outcome(unit: Unit, out: Outcome) -> None:
        for rec in out.records:
            if writer.write(rec):
                counts["records"] += 1
        entry = _entry(unit, out)
        state[unit.key] = entry
        unit_log.add(entry)
        count_yield(entry)
        counts["failed"] += entry["status"] == "failed"
        counts["rejected"] += len(out.rejected)
        bar.update(1)
        now = time.monotonic()
        if now - last["postfix"] > 1.0:
            u = client.usage_totals()
            bar.set_postfix(rec=counts["records"], rps=f"{u['requests'] / max(1e-9, now - t0):.1f}",
                            tok=u["prompt_tokens"] + u["completion_tokens"], usd=f"{u['cost_usd']:.2f}",
                            fail=counts["failed"], refresh=False)
            last["postfix"] = now
        if len(unit_log.pending) >= 50 or now - last["flush"] > 2.0:
            flush()

    try:
        asyncio.run(drive(todo, methods, client, settings, on_outcome, ctx.stop_requested,
                          p.unit_concurrency or 2 * llm.concurrency, p.stop_grace_s))
    finally:
        flush()
        bar.close()
        client.close()

    # final view over this shard's planned units
    final = [state[u.key] for u in units if u.key in state]
    failed = [e for e in final if e["status"] == "failed"]
    write_yield(done=all(e["status"] in FINAL for e in final) and len(final) == len(units))
    failures_file = ctx.output_path(".failures.jsonl")
    quarantine_file = ctx.output_path(".quarantine.jsonl")
    write_jsonl(failures_file, ({"unit": e["unit"], "seed_id": e["seed_id"], "method": e["method"],
                                 "sub_method": e["sub_method"], "sample_index": e["sample_index"], **e["failure"]}
                                for e in failed))
    write_jsonl(quarantine_file, ({"unit": e["unit"], "seed_id": e["seed_id"], "method": e["method"],
                                   "sub_method": e["sub_method"], **r} for e in final for r in e["rejected"]))
    cum = add_totals(prev_usage, client.usage_totals())
    usage = {"requests": cum.get("requests", 0), "prompt_tokens": cum.get("prompt_tokens", 0),
             "completion_tokens": cum.get("completion_tokens", 0), "cost_usd": round(cum.get("cost_usd", 0.0), 6),
             "reference_cost_usd": round(cum.get("reference_cost_usd", 0.0), 6), "failures": len(failed),
             "cached": client.usage.cached}
    by_method: dict[str, int] = {}
    for e in final:
        by_method[e["method"]] = by_method.get(e["method"], 0) + len(e["records"])
    meta = {
        "usage": usage,
        "this_attempt": client.usage_totals(),
        "units": {"planned": len(units), "finished": len(final), "failed": len(failed),
                  "rejected_outputs": sum(len(e["rejected"]) for e in final)},
        "records_by_method": by_method,
        "seeds": len(my_seeds),
        "scale": scale,
        "records_by_slot": dict(yields.records),
        "units_by_slot": dict(yields.finished),
        "failures_file": failures_file.name,
        "quarantine_file": quarantine_file.name,
    }
    unfinished = len(units) - len(final)
    if ctx.stop_requested() and unfinished:
        return meta  # the worker sees the stop flag: the partial output stays for the rerun
    tol = llm.failure_tolerance if p.failure_tolerance is None else p.failure_tolerance
    if unfinished or len(failed) > tol * len(units):
        raise StageFailed(
            f"stage {ctx.stage_name} shard {ctx.shard}: {len(failed)} of {len(units)} units failed permanently "
            f"({len(failed) / max(1, len(units)):.1%} > tolerance {tol:.1%}); {unfinished} unfinished; "
            f"see {failures_file}; rerun the shard to retry them (successful requests come from the cache)"
        )
    return {**meta, "complete": True}
