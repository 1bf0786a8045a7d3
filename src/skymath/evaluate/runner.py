"""Evaluate benchmark items with one backend: prompt -> greedy generation -> answer extraction ->
grading under two protocols -> one result Record per item (the per-sample results JSONL).

Protocols: `paper` (MetaMath's evaluation, as the paper: `skymath.evaluate.paper_protocol`) and
the symbolic grader (`skymath.evaluate.grade`) on the strict extraction (text after the last
"The answer is") and on the lenient one. A generation that FAILED (API error, timeout, server
gone, engine exception, error finish reason) is never graded: it becomes a failure entry with its
reason, and the stage decides whether the shard may finish (an error is never a verdict).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from skymath.evaluate.backends.base import Backend, Generation, generation_error
from skymath.evaluate.extract import extract_answer
from skymath.records import Record

log = logging.getLogger("skymath.evaluate")


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
    """An ungraded result: the response with its extractions (verdicts come from `grade_records`).

    The paper protocol reads the raw generation (it applies MetaMath's stop strings itself); the
    symbolic grader reads the response cut at a new prompt frame.
    """
    from skymath.evaluate.paper_protocol import paper_correct, paper_prediction

    text = clean_response(gen.text)
    raw = gen.text or ""
    return Record(
        id=item["id"], problem=item["problem"], response=text, answer=item["gold"],
        source=item["benchmark"], level=item.get("level"), subject=item.get("subject"),
        method="eval", stage=stage, parent_id=item.get("parent_id"),
        meta={
            "index": item["index"], "benchmark": item["benchmark"], "kind": item["kind"], "model": model,
            "distractors": item.get("distractors"),
            "pred_paper": paper_prediction(raw, item["kind"]),
            "correct_paper": paper_correct(raw, item["gold"], item["kind"]),
            "pred_strict": extract_answer(text, "strict"), "pred_lenient": extract_answer(text, "lenient"),
            "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "finish_reason": gen.finish_reason,
        },
    )


def failure_entry(item: dict[str, Any], error: str, gen: Generation | None = None) -> dict[str, Any]:
    """What a failed generation leaves behind: which item, why (never a verdict)."""
    return {"id": item["id"], "index": item["index"], "benchmark": item["benchmark"], "kind": item["kind"],
            "error": " ".join(str(error).split())[:500],
            "finish_reason": gen.finish_reason if gen is not None else None}


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
) -> tuple[list[Record], list[dict[str, Any]]]:
    """Generate, extract and grade `items` chunk by chunk (each chunk is written before the next
    starts, so a preempted shard resumes after its last written chunk).

    Returns (graded records, failures). A failed generation is not graded and not written: the
    shard's rerun generates it again.
    """
    out: list[Record] = []
    failures: list[dict[str, Any]] = []
    for lo in range(0, len(items), chunk):
        if stop is not None and stop():
            break
        part = items[lo : lo + chunk]
        prompts = [build_prompt(it["problem"], style, backend.tokenizer) for it in part]
        try:
            gens = backend.generate(prompts, max_new_tokens)
        except Exception as e:  # noqa: BLE001 - a backend that raises fails these items, never grades them
            log.exception("generation failed for items %s..%s", part[0]["id"], part[-1]["id"])
            failures.extend(failure_entry(it, f"{type(e).__name__}: {e}") for it in part)
            continue
        ok: list[Record] = []
        for it, g, p in zip(part, gens, prompts, strict=True):
            err = generation_error(g)
            if err is not None:
                failures.append(failure_entry(it, err, g))
            else:
                ok.append(result_record(it, g, p, stage, model))
        grade_records(ok, pool=pool, timeout=grade_timeout)
        for r in ok:
            if write is not None:
                write(r)
            out.append(r)
    return out, failures
