"""Evaluate benchmark items with one backend: prompt -> greedy generation -> strict and lenient
extraction -> grading -> one result Record per item (the per-sample results JSONL)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from skymath.evaluate.backends.base import Backend, Generation
from skymath.evaluate.extract import extract_answer
from skymath.records import Record


def build_prompt(problem: str, style: str, tokenizer: Any = None) -> str:
    """The SFT prompt (`skymath.prompts.sft_prompt`): evaluation can never drift from training.

    "chat" without a tokenizer (API models) is the chat template's user turn, sent as a message.
    """
    from skymath.prompts import sft_prompt

    if style == "chat" and tokenizer is None:
        return f"{problem}\nLet's think step by step."

    return sft_prompt(problem, style=style, tokenizer=tokenizer)


FRAME_MARKERS = ("### Instruction:", "### Response:")  # the SFT frame (prompts/sft.jinja)


def clean_response(text: str) -> str:
    """Cut a response where the model starts a new prompt frame: an untrained model rambles on
    into an invented next problem, whose "The answer is" must never be graded."""
    cut = min((i for i in (text.find(m) for m in FRAME_MARKERS) if i >= 0), default=-1)
    return (text[:cut] if cut >= 0 else text).rstrip()


def result_record(item: dict[str, Any], gen: Generation, prompt: str, stage: str, model: str) -> Record:
    """An ungraded result: the response with both extractions (verdicts come from `grade_records`)."""
    text = clean_response(gen.text)
    return Record(
        id=item["id"], problem=item["problem"], response=text, answer=item["gold"],
        source=item["benchmark"], level=item.get("level"), subject=item.get("subject"),
        method="eval", stage=stage, parent_id=item.get("parent_id"),
        meta={
            "index": item["index"], "benchmark": item["benchmark"], "kind": item["kind"], "model": model,
            "distractors": item.get("distractors"),
            "pred_strict": extract_answer(text, "strict"), "pred_lenient": extract_answer(text, "lenient"),
            "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "finish_reason": gen.finish_reason,
        },
    )


def grade_records(records: Sequence[Record], pool: Any = None, processes: int | None = None,
                  timeout: float = 1.0) -> list[Record]:
    """Fill `correct_strict` / `correct_lenient` (lenient is strict OR the lenient extraction)."""
    from skymath.evaluate.grade import grade_many

    triples = []
    for r in records:
        triples.append((r.meta["pred_strict"], r.answer or "", r.meta["kind"]))
        triples.append((r.meta["pred_lenient"], r.answer or "", r.meta["kind"]))
    verdicts = grade_many(triples, processes=processes, timeout=timeout, pool=pool)
    for k, r in enumerate(records):
        strict, lenient = verdicts[2 * k], verdicts[2 * k + 1]
        r.meta["correct_strict"] = strict
        r.meta["correct_lenient"] = strict or lenient
    return list(records)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def evaluate_items(
    items: Sequence[dict[str, Any]], backend: Backend, *, style: str, max_new_tokens: int, stage: str,
    model: str, chunk: int = 64, pool: Any = None, grade_timeout: float = 1.0,
    write: Callable[[Record], Any] | None = None, stop: Callable[[], bool] | None = None,
) -> list[Record]:
    """Generate, extract and grade `items` chunk by chunk (each chunk is written before the next
    starts, so a preempted shard resumes after its last written chunk)."""
    out: list[Record] = []
    for lo in range(0, len(items), chunk):
        if stop is not None and stop():
            break
        part = items[lo : lo + chunk]
        prompts = [build_prompt(it["problem"], style, backend.tokenizer) for it in part]
        gens = backend.generate(prompts, max_new_tokens)
        recs = [result_record(it, g, p, stage, model) for it, g, p in zip(part, gens, prompts, strict=True)]
        grade_records(recs, pool=pool, timeout=grade_timeout)
        for r in recs:
            if write is not None:
                write(r)
            out.append(r)
    return out
