"""GSM8K with 1-5 inserted distractor sentences (the CMATH method), built through the synthesis
client from prompts/distractors.jinja, and read back as evaluation items."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from skymath.records import Record

_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:rewritten|new|modified)?\s*problem\s*:?\s*(?:\*\*)?\s*", re.IGNORECASE)


def distractor_messages(problem: str, count: int) -> list[dict[str, str]]:
    from skymath.prompts import render

    return [{"role": "user", "content": render("distractors", problem=problem, count=count)}]


def parse_rewrite(text: str | None) -> str:
    """The rewritten problem from a model answer: label and quotes stripped."""
    s = (text or "").strip()
    s = _PREFIX.sub("", s, count=1).strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s


def check_rewrite(original: str, rewritten: str) -> str | None:
    """Why a rewrite is unusable (None if it is fine): it must be longer, keep every number of the
    original and its final question, and carry no solution."""
    if len(rewritten) <= len(original):
        return "not longer than the original"
    missing = Counter(_NUM.findall(original)) - Counter(_NUM.findall(rewritten))
    if missing:
        return f"drops original numbers {sorted(missing)[:5]}"
    last_q = re.split(r"(?<=[.!?])\s+", original.strip())[-1]
    if last_q and last_q not in rewritten:
        return "changes the final question"
    if "the answer is" in rewritten.lower():
        return "contains a solution"
    return None


def distractor_record(item: dict[str, Any], count: int, rewritten: str, stage: str) -> Record:
    return Record(
        id=f"{item['id']}#d{count}", problem=rewritten, answer=item["gold"], source="gsm8k+distractors",
        method="distractors", stage=stage, parent_id=item["id"],
        meta={"distractors": count, "original": item["problem"]},
    )


def distractor_items(records: Iterable[Record], benchmark: str = "gsm8k_distractors") -> list[dict[str, Any]]:
    """Distractor Records -> eval items (kind gsm8k, with their distractor count)."""
    out = []
    for r in records:
        out.append({"id": f"{benchmark}/{r.id}", "kind": "gsm8k", "problem": r.problem, "gold": r.answer or "",
                    "level": None, "subject": None, "distractors": int(r.meta.get("distractors") or 0),
                    "parent_id": r.parent_id, "benchmark": benchmark})
    return out
