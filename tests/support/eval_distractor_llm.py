"""A scripted distractor writer for the test-owned OpenAI-compatible server (no model): it reads
the rendered prompts/distractors.jinja request and inserts the asked number of irrelevant
sentences before the problem's final question, as an instruction-following model would."""

from __future__ import annotations

import re

SENTENCES = [
    "The weather that day was sunny and warm.",
    "Her cousin owns 3 bicycles.",
    "The store opened 12 years ago.",
    "A neighbor walked by with a small dog.",
    "The town library has 4 floors.",
]


def distractor_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    count = int(re.search(r"exactly (\d+) irrelevant", prompt).group(1))
    problem = prompt.split("Problem:\n", 1)[1].rsplit("\n\nReply with", 1)[0].strip()
    parts = re.split(r"(?<=[.!?])\s+", problem)
    body_part, question = " ".join(parts[:-1]), parts[-1]
    inserted = " ".join(SENTENCES[:count])
    return f"Rewritten problem: {body_part} {inserted} {question}".replace("  ", " ")
