"""The one answer format of every synthetic response: reasoning, then `\\nThe answer is <answer>`.

The answer is taken from the last `The answer is`, else the last `\\boxed{}`, else the model's
final line; the ending is then rewritten canonically. Extraction reuses
`skymath.evaluate.extract` so training data and evaluation agree on what an answer is.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from skymath.evaluate.extract import ANSWER_PREFIX, extract_answer, last_boxed

SUFFIX = "\nThe answer is "
_REFUSAL_RE = re.compile(
    r"\b(?:I'm sorry|I am sorry|I cannot|I can't|as an AI|cannot be (?:solved|determined)|"
    r"not enough information|insufficient information|no solution exists|is unsolvable)\b",
    re.IGNORECASE,
)


@dataclass
class Final:
    response: str  # reasoning + "\nThe answer is <answer>"
    answer: str
    source: str  # "prefix" | "boxed" | "last_line"


_TRAILING_NUM = re.compile(r"(-?\d[\d,]*(?:\.\d+)?|-?\.\d+)\s*\$?\s*\.?\s*$")
_PHRASE = re.compile(r"answer\s*(?:is|:)\s*(.+)$", re.IGNORECASE)
_ASSIGN = re.compile(r"=\s*([^=]+?)\s*\$?\s*\.?\s*$")


def _final_line_answer(text: str) -> str | None:
    """The answer stated by the final line: `... answer is X`, `... = X`, or a line ending in a number."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    last = lines[-1]
    for rx in (_PHRASE, _ASSIGN, _TRAILING_NUM):
        m = rx.search(last)
        if m:
            got = m.group(1).strip().strip("$").strip().rstrip(".").strip()
            if got and len(got) <= 80 and re.search(r"[\d\\^]", got):  # a value, not a phrase
                return got
    return None


def finalize(text: str | None, min_reasoning_chars: int = 1) -> tuple[Final | None, str | None]:
    """(Final, None) for a usable response, else (None, reason) for the quarantine."""
    if text is None or not text.strip():
        return None, "empty response"
    body = text.strip()
    idx, end, answer = len(body), len(body), None
    while answer is None:  # the last `The answer is` that states something (a cut-off one is skipped)
        idx = body.rfind(ANSWER_PREFIX, 0, idx)
        if idx < 0:
            break
        answer = extract_answer(body[idx:end], mode="strict")
        end = idx
    if answer is not None:
        source = "prefix"
        inner = last_boxed(answer)  # "The answer is \boxed{5}" -> 5
        if inner:
            answer = inner
        reasoning = body[:idx].rstrip()
    else:
        answer = last_boxed(body)
        source = "boxed"
        if not answer:
            answer = _final_line_answer(body)
            source = "last_line"
        reasoning = body
    if not answer:
        return None, "no extractable answer"
    answer = " ".join(answer.split())
    if len(reasoning) < min_reasoning_chars:
        return None, "no reasoning before the answer"
    return Final(response=f"{reasoning}{SUFFIX}{answer}", answer=answer, source=source), None


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL_RE.search(text or ""))


# ---- comparing an answer with a known gold answer -----------------------------------------------
_SPACES = re.compile(r"\s+")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize(ans: str) -> str:
    """A conservative canonical form (LaTeX spacing, \\dfrac, units in \\text, $, degrees, 1,000)."""
    s = ans.strip().strip("$").strip()
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("%", "")
    s = _TEXT_CMD.sub(lambda m: m.group(1), s)
    s = _SPACES.sub("", s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = s.rstrip(".")
    return s


def _as_number(s: str) -> float | None:
    m = re.fullmatch(r"\\frac\{(-?\d+)\}\{(-?\d+)\}", s) or re.fullmatch(r"(-?\d+)/(-?\d+)", s)
    if m:
        den = int(m.group(2))
        return int(m.group(1)) / den if den else None
    try:
        return float(s)
    except ValueError:
        return None


def answers_match(pred: str | None, gold: str | None) -> bool:
    """True when pred and gold are the same answer (string form, number, or math-verify)."""
    if pred is None or gold is None:
        return False
    a, b = normalize(pred), normalize(gold)
    if a == b:
        return True
    x, y = _as_number(a), _as_number(b)
    if x is not None and y is not None:
        return abs(x - y) <= 1e-6 * max(1.0, abs(y))
    if len(a) > 200 or len(b) > 200:
        return False
    try:
        import threading

        from math_verify import parse, verify

        # math-verify enforces its timeouts with signal.alarm, which only works in the main thread
        main = threading.current_thread() is threading.main_thread()
        kw_p, kw_v = ({}, {}) if main else ({"parsing_timeout": None}, {"timeout_seconds": None})
        logger = logging.getLogger("math_verify")
        old_level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            g = parse(f"${gold}$", **kw_p)
            p = parse(f"${pred}$", **kw_p)
            return bool(g and p and verify(g, p, **kw_v))
        finally:
            logger.setLevel(old_level)
    except Exception:  # noqa: BLE001 - a grader failure is a mismatch, never a crash
        return False
