"""FOBAR and self-verification: deterministic backward questions (MetaMath).

Each number of the question is masked in turn as an unknown (X); with the known answer given,
the new question asks for X, whose true value is the masked number — so a backward answer can be
checked even though the forward answer is what the seed knows. No API call is needed to build them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skymath.prompts import render

# a standalone number: not part of a word, an exponent/subscript, or a decimal's tail
_NUM_RE = re.compile(r"(?<![\w.^_])(?<!\^\{)(?<!_\{)\d+(?:,\d{3})*(?:\.\d+)?(?![\d\w])")
_ASY_RE = re.compile(r"\[asy\].*?\[/asy\]", re.DOTALL)
_VARS = ("X", "Y", "Z", "U", "W")


@dataclass(frozen=True)
class Backward:
    question: str
    masked_value: str  # the number that was masked: the expected answer
    var: str
    index: int  # which number of the question (0-based)


def maskable_numbers(problem: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of every number that can be masked, in order (Asymptote code skipped)."""
    blocked = [(m.start(), m.end()) for m in _ASY_RE.finditer(problem)]
    out = []
    for m in _NUM_RE.finditer(problem):
        if any(a <= m.start() < b for a, b in blocked):
            continue
        if m.end() < len(problem) and problem[m.end()] == "." and problem[m.end() + 1:m.end() + 2].isdigit():
            continue
        out.append((m.start(), m.end(), m.group(0)))
    return out


def _var_for(problem: str) -> str:
    for v in _VARS:
        if not re.search(rf"(?<![A-Za-z\\]){v}(?![A-Za-z])", problem):
            return v
    return "X"


def _split_question(text: str) -> tuple[str, str]:
    """(context, question sentence): the last sentence that asks something (or the last one)."""
    text = text.strip()
    parts = re.split(r"(?<=[.?!])\s+(?=[A-Z$\\(])", text)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].rstrip().endswith("?"):
            return " ".join(parts[:i]).strip(), " ".join(parts[i:]).strip()
    return " ".join(parts[:-1]).strip(), parts[-1].strip()


def _mask(problem: str, sample_index: int) -> tuple[str, str, str, int] | None:
    nums = maskable_numbers(problem)
    if not nums:
        return None
    idx = sample_index % len(nums)
    start, end, value = nums[idx]
    var = _var_for(problem)
    masked = problem[:start] + var + problem[end:]
    return masked, value.replace(",", ""), var, idx


def fobar_question(problem: str, answer: str, sample_index: int) -> Backward | None:
    """`<question with X>\\nIf we know the answer to the above question is A, what is X?`"""
    m = _mask(problem, sample_index)
    if m is None:
        return None
    masked, value, var, idx = m
    q = render("synth/fobar", masked_problem=masked.strip(), answer=answer.strip(), var=var)
    return Backward(q, value, var, idx)


def self_verification_question(problem: str, answer: str, sample_index: int) -> Backward | None:
    """The question turned into a statement that includes the answer, then asked for X."""
    m = _mask(problem, sample_index)
    if m is None:
        return None
    masked, value, var, idx = m
    context, question = _split_question(masked)
    if var not in context and var not in question:
        return None
    q = render("synth/self_verification", context=context, question=question, answer=answer.strip(), var=var)
    return Backward(q, value, var, idx)
