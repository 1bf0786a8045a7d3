"""Evol-Instruct (WizardLM / WizardMath): evolve a problem step by step with five strategies.

Each trajectory runs up to `max_steps` evolutions; a failed evolution (unchanged, template words
leaked, refusal, too short, unsolvable) ends it. Every surviving problem is answered with chain
of thought and becomes a record whose meta keeps the trajectory (parent ids, strategy per step).
"""

from __future__ import annotations

import difflib
import hashlib

from skymath.prompts import render
from skymath.records import Record
from skymath.synth.answer import is_refusal
from skymath.synth.methods.base import (
    Caller,
    Method,
    Outcome,
    Unit,
    answer_problem,
    clean_problem,
    record_id,
)
from skymath.synth.params import EvolParams

LEAK_WORDS = ("given problem", "new problem", "#given", "#rewritten", "rewritten prompt", "given prompt",
              "refined problem", "the original problem", "###")


def choose_strategy(weights: dict[str, float], seed_id: str, trajectory: int, depth: int) -> str:
    """Deterministic weighted choice from a hash of (seed, trajectory, depth)."""
    items = [(k, w) for k, w in weights.items() if w > 0]
    total = sum(w for _, w in items)
    h = int.from_bytes(hashlib.sha256(f"{seed_id}|{trajectory}|{depth}".encode()).digest()[:8], "big")
    x = (h / 2**64) * total
    for k, w in items:
        if x < w:
            return k
        x -= w
    return items[-1][0]


def elimination_reason(parent: str, child: str, min_chars: int, min_ratio: float) -> str | None:
    """Why an evolved problem is a failed evolution, or None if it survives."""
    if not child:
        return "empty evolution"
    low = child.lower()
    norm_p, norm_c = " ".join(parent.lower().split()), " ".join(low.split())
    if norm_c == norm_p or difflib.SequenceMatcher(None, norm_p, norm_c).ratio() > 0.95:
        return "unchanged problem"
    for w in LEAK_WORDS:
        if w in low:
            return f"template words leaked ({w!r})"
    if is_refusal(child):
        return "refusal"
    if len(child) < min_chars or len(child) < min_ratio * len(parent):
        return "too short"
    return None


class Evol(Method):
    name = "evol"
    params: EvolParams

    def plan(self, seed: Record) -> list[Unit]:
        return [Unit(seed, self.name, "trajectory", t) for t in range(self.params.trajectories)]

    async def run(self, unit: Unit, caller: Caller) -> Outcome:
        out = caller.outcome
        problem, parent_id = unit.seed.problem, unit.seed.id
        trajectory: list[dict] = []
        for depth in range(1, self.params.max_steps + 1):
            strategy = choose_strategy(self.params.strategies, unit.seed.id, unit.sample_index, depth)
            label = f"{unit.key}|d{depth}|{strategy}"
            res = await caller.chat(label + "|evolve", render("synth/evol", problem=problem, strategy=strategy),
                                    unit.sample_index)
            child = clean_problem(res.text)
            reason = elimination_reason(problem, child, self.settings.min_problem_chars,
                                        self.settings.min_length_ratio)
            if reason is None:
                final, why, ares = await answer_problem(caller, child, label + "|answer", unit.sample_index)
                if final is None:
                    reason = f"unsolvable ({why})"
            if reason is not None:
                out.rejected.append({"reason": f"failed evolution at depth {depth}: {reason}",
                                     "depth": depth, "strategy": strategy, "text": res.text})
                return out
            step = {"depth": depth, "strategy": strategy, "parent_id": parent_id,
                    "id": record_id(self.settings.stage, unit, depth)}
            trajectory.append(step)
            rec = self.make_record(unit, child, final, caller, ares, depth=depth, parent_id=parent_id,
                                   sub_method=strategy, trajectory=[dict(s) for s in trajectory])
            out.records.append(rec)
            problem, parent_id = child, rec.id
        return out
