"""LLM judges (hardness rating, verifier) through the synthesis client, with robust parsing:
an answer without a usable rating or verdict is a recorded failure, never a crash.

Two kinds of "no verdict", kept apart: the judge ANSWERED without a usable rating (`error`, a
property of the answer: rerunning returns the same cached answer), and the REQUEST failed after
the client's retries (`request_failed`: rate limit, timeout, server gone). A failed request is
never a verdict: the stages count it against `failure_tolerance` and retry it on rerun.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from skymath.prompts import render

_RATING = re.compile(r"difficulty(?:\s+(?:rating|level|score))?\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)", re.I)
_VERDICT = re.compile(r"verdict\s*[:=]\s*\**\s*(correct|incorrect|wrong|right)\b", re.I)


@dataclass
class Judgement:
    key: str
    value: float | bool | None  # rating 1..10, or verdict True/False; None on failure
    error: str | None
    text: str | None = None
    request_failed: bool = False  # no answer at all (retried on rerun), as opposed to an unusable answer

    def to_meta(self) -> dict[str, Any]:
        return {"value": self.value, "error": self.error}


def parse_rating(text: str | None, lo: float = 1, hi: float = 10) -> tuple[float | None, str | None]:
    """The last `Difficulty: N` in the answer, if within [lo, hi]."""
    if not text:
        return None, "empty answer"
    found = _RATING.findall(text)
    if not found:
        return None, "no 'Difficulty: N' line in the answer"
    v = float(found[-1])
    if not lo <= v <= hi:
        return None, f"difficulty {found[-1]} outside {lo:g}..{hi:g}"
    return v, None


def parse_verdict(text: str | None) -> tuple[bool | None, str | None]:
    """The last `Verdict: correct|incorrect` in the answer."""
    if not text:
        return None, "empty answer"
    found = _VERDICT.findall(text)
    if not found:
        return None, "no 'Verdict: correct|incorrect' line in the answer"
    return found[-1].lower() in ("correct", "right"), None


def hardness_prompt(problem: str, response: str | None = None, template: str = "judge/hardness") -> str:
    return render(template, problem=problem, response=response or "")


def verifier_prompt(problem: str, response: str | None, gold: str | None = None,
                    template: str = "judge/verifier") -> str:
    return render(template, problem=problem, response=response or "", gold=gold or "")


def judge(client: Any, keyed_prompts: Sequence[tuple[str, str]], parse: Callable[[str | None], tuple[Any, str | None]],
          temperature: float = 0.0, max_tokens: int = 1024,
          progress: Callable[[Any], None] | None = None) -> list[Judgement]:
    """Send every prompt through `client.run_batch` and parse the answers; failures become Judgements with an error."""
    from skymath.synth.client import ChatRequest

    reqs = [ChatRequest(key, [{"role": "user", "content": prompt}], temperature=temperature, max_tokens=max_tokens)
            for key, prompt in keyed_prompts]
    out = []
    for res in client.run_batch(reqs, progress=progress):
        if res.error is not None:
            out.append(Judgement(res.key, None, f"request failed after {res.attempts} attempt(s): {res.error}",
                                 res.text, request_failed=True))
            continue
        value, err = parse(res.text)
        out.append(Judgement(res.key, value, err, res.text))
    return out


def failure_row(rec: Any, j: Judgement) -> dict[str, Any]:
    """One line of a judge stage's `.failures.jsonl`: which record, why its request failed."""
    return {"id": rec.id, "error": " ".join(str(j.error).split())[:500]}


def check_failures(ctx: Any, failures: list[dict[str, Any]], total: int, tolerance: float, what: str) -> None:
    """Write the shard's failure list; fail the shard (no `.done`) when it exceeds the tolerance."""
    from skymath.errors import StageFailed
    from skymath.records import write_jsonl

    path = ctx.output_path(".failures.jsonl")
    write_jsonl(path, failures)
    if failures and not ctx.stop_requested() and len(failures) > tolerance * total:
        first = failures[0]["error"][:300]
        raise StageFailed(
            f"stage {ctx.stage_name} shard {ctx.shard}: {len(failures)} of {total} {what} requests failed "
            f"(first: {first}); over failure_tolerance {tolerance:g}, none of them became a verdict; "
            f"`skymath resubmit` retries only them (answers already received come from the cache; list: {path})")
