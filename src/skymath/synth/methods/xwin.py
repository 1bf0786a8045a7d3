"""Xwin-style question generation with self-correction: refine, verify step by step, correct, answer.

The model writes four sections (refined problem, verification, verdict, corrected problem). The
parser is forgiving: headings in markdown or bold or plain `Name:` form; a missing verdict counts
as correct; a missing refined problem falls back to the corrected one, then to the whole reply.
"""

from __future__ import annotations

import re

from skymath.prompts import render
from skymath.records import Record
from skymath.synth.methods.base import Caller, Method, Outcome, Unit, answer_problem, clean_problem
from skymath.synth.methods.evol import elimination_reason
from skymath.synth.params import XwinParams

_SECTIONS = ("refined problem", "verification", "verdict", "corrected problem")
_HEAD_RE = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*|\*\*[ \t]*)?(refined problem|refined question|verification|verdict|"
    r"corrected problem|corrected question)[ \t]*(?:\*\*)?[ \t]*:?[ \t]*(?:\*\*)?[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)


def parse_sections(text: str) -> dict[str, str]:
    """Section name -> body (names normalised to `_SECTIONS`); empty dict when no heading is found."""
    heads = list(_HEAD_RE.finditer(text or ""))
    out: dict[str, str] = {}
    for i, m in enumerate(heads):
        name = m.group(1).lower().replace("question", "problem")
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        body = text[m.end():end].strip()
        if body and name not in out:
            out[name] = body
    return out


def pick_problem(text: str) -> tuple[str, dict]:
    """The final question (corrected when the verdict says flawed) and how it was chosen."""
    sec = parse_sections(text)
    verdict_text = sec.get("verdict", "").lower()
    flawed = "flaw" in verdict_text or "incorrect" in verdict_text or "not correct" in verdict_text
    refined, corrected = sec.get("refined problem"), sec.get("corrected problem")
    if flawed and corrected:
        chosen, how = corrected, "corrected"
    elif refined:
        chosen, how = refined, "refined"
    elif corrected:
        chosen, how = corrected, "corrected-only"
    else:
        chosen, how = text, "fallback-whole-reply"
    info = {"verdict": "flawed" if flawed else ("correct" if verdict_text else "missing"), "chosen": how,
            "sections": sorted(sec)}
    return clean_problem(chosen), info


class Xwin(Method):
    name = "xwin"
    params: XwinParams

    def plan(self, seed: Record) -> list[Unit]:
        return [Unit(seed, self.name, "refine", i) for i in range(self.params.samples)]

    async def run(self, unit: Unit, caller: Caller) -> Outcome:
        out = caller.outcome
        res = await caller.chat(unit.key + "|refine", render("synth/xwin", problem=unit.seed.problem),
                                unit.sample_index)
        problem, info = pick_problem(res.text or "")
        reason = elimination_reason("", problem, self.settings.min_problem_chars, 0.0)
        if reason is None and len(problem) > 4000:
            reason = "too long (unparsed reply?)"
        if reason is not None:
            out.rejected.append({"reason": f"unusable refined problem: {reason}", "text": res.text, **info})
            return out
        final, why, ares = await answer_problem(caller, problem, unit.key + "|answer", unit.sample_index)
        if final is None:
            out.rejected.append({"reason": why, "text": ares.text, **info})
            return out
        out.records.append(self.make_record(unit, problem, final, caller, ares, depth=1, xwin=info))
        return out
