"""Evol-Instruct (WizardLM / WizardMath): evolve a problem step by step with five strategies.

Each trajectory runs up to `max_steps` evolutions; a failed evolution (unchanged, template words
leaked, refusal, too short, unsolvable) ends it. Every surviving problem is answered with chain
of thought and becomes a record whose meta keeps the trajectory (parent ids, strategy per step).
"""

from __future__ import annotations

import difflib
import hashlib
import re

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


_TOKEN_RE = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")
# words that add no mathematical content on their own: a child whose only new words are these
# (and punctuation) says the same thing as its parent
_NO_CONTENT = frozenset("""a an the of to in on at by for with and or as is are be it its this that these
those which who whom what then than so also please now here there thus hence""".split())


def added_content(parent: str, child: str) -> list[str]:
    """The tokens the child adds or substitutes (difflib opcodes on word/number/symbol tokens,
    case-insensitive), without the ones that carry no content (articles, punctuation alone)."""
    p, c = _TOKEN_RE.findall(parent.lower()), _TOKEN_RE.findall(child.lower())
    sm = difflib.SequenceMatcher(None, p, c, autojunk=False)
    new = [t for tag, _i1, _i2, j1, j2 in sm.get_opcodes() if tag in ("insert", "replace") for t in c[j1:j2]]
    return [t for t in new if t not in _NO_CONTENT and (t[0].isalnum() or t in "=<>+-*/^|!%")]


def is_unchanged(parent: str, child: str) -> bool:
    """A copy, a reformatting, or a deletion: nothing new in the child. A genuine addition of a
    few words (the add_constraints strategy: ", where n is odd") is a change, however long the
    parent: the old rule (SequenceMatcher ratio > 0.95 on characters) rejected exactly those."""
    return not added_content(parent, child)


def elimination_reason(parent: str, child: str, min_chars: int, min_ratio: float) -> str | None:
    """Why an evolved problem is a failed evolution, or None if it survives."""
    if not child:
        return "empty evolution"
    low = child.lower()
    if parent and is_unchanged(parent, child):
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
