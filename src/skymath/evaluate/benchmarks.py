"""Benchmark items: GSM8K test, MATH test, MATH500 from data.root (or any path / HF dataset).

Every item is a plain dict: id, benchmark (report label), kind (gsm8k | math: how it is graded),
problem, gold, level (int | None), subject, distractors (int | None), index (global order).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from skymath.config.base import Strict
from skymath.errors import UserError

KNOWN = {"gsm8k": ("gsm8k_test.jsonl", "gsm8k"), "math": ("math_test.jsonl", "math"),
         "math500": ("math500_test.jsonl", "math")}


class BenchmarkSpec(Strict):
    """One benchmark of an eval stage."""

    name: str  # label in reports: gsm8k, math, math500, or your own
    source: str | None = None  # data file in data.root, a path, or hf:DATASET[:CONFIG] (default by name)
    kind: Literal["gsm8k", "math"] | None = None  # grading rules (default by name)
    split: str = "test"  # for hf: sources
    limit: int | None = Field(None, ge=1)  # evaluate this many items
    sample: Literal["first", "spread"] = "spread"  # which items a limit keeps: the first N or evenly spaced

    @model_validator(mode="after")
    def _defaults(self) -> BenchmarkSpec:
        known = KNOWN.get(self.name)
        if self.source is None:
            if known is None:
                raise ValueError(f"benchmark {self.name!r}: give a source (known names: {', '.join(KNOWN)})")
            self.source = known[0]
        if self.kind is None:
            self.kind = known[1] if known else ("gsm8k" if "gsm8k" in self.name.lower() else "math")
        return self


def _level(v: Any) -> int | None:
    if v is None:
        return None
    m = re.search(r"\d+", str(v))
    return int(m.group(0)) if m else None


def _gsm8k_final(answer: str) -> str:
    return answer.split("####")[-1].strip().replace(",", "")


def normalize_row(row: dict[str, Any], kind: str, i: int, where: str) -> dict[str, Any]:
    """One raw row (shared-data schema, HF schema, or a skymath Record) -> an item dict."""
    problem = row.get("problem") or row.get("question")
    if not problem:
        raise UserError(f"{where}:{i + 1}: row has no 'problem' or 'question'")
    if row.get("final") is not None:
        gold = str(row["final"])
    elif kind == "gsm8k" and row.get("answer") is not None and "####" in str(row["answer"]):
        gold = _gsm8k_final(str(row["answer"]))
    elif row.get("answer") is not None:
        gold = str(row["answer"])
    elif row.get("solution"):
        from skymath.evaluate.extract import last_boxed

        gold = last_boxed(row["solution"]) or ""
    else:
        raise UserError(f"{where}:{i + 1}: row has no gold answer ('final', 'answer' or 'solution')")
    rid = row.get("unique_id") or row.get("id") or f"{i:05d}"
    meta = row.get("meta") or {}
    return {
        "id": str(rid), "kind": kind, "problem": problem, "gold": gold,
        "level": _level(row.get("level")), "subject": row.get("type") or row.get("subject"),
        "distractors": meta.get("distractors"), "parent_id": row.get("parent_id"),
    }


def _read_source(spec: BenchmarkSpec, data_root: Path) -> tuple[list[dict[str, Any]], str]:
    src = spec.source or ""
    if src.startswith("hf:"):
        from datasets import load_dataset

        name, _, config = src[3:].partition(":")
        try:
            ds = load_dataset(name, config or None, split=spec.split)
        except Exception as e:  # noqa: BLE001 - surface as a one-line config error
            raise UserError(f"benchmark {spec.name}: cannot load {src} split {spec.split}: {e}") from None
        return [dict(r) for r in ds], src
    p = Path(src)
    if not p.is_absolute() and not p.exists():
        p = data_root / src
    if not p.exists() and p.suffix == "":
        p = p.with_suffix(".jsonl")
    if not p.exists():
        raise UserError(f"benchmark {spec.name}: data file {src} not found (looked in {data_root})")
    from skymath.records import read_jsonl

    return list(read_jsonl(p)), str(p)


def pick(n: int, limit: int | None, sample: str) -> list[int]:
    """Indices kept by a limit: the first N, or N evenly spaced (covers every MATH subject)."""
    if limit is None or limit >= n:
        return list(range(n))
    if sample == "first":
        return list(range(limit))
    return [(i * n) // limit for i in range(limit)]


def load_benchmark(spec: BenchmarkSpec, data_root: Path) -> list[dict[str, Any]]:
    rows, where = _read_source(spec, data_root)
    keep = pick(len(rows), spec.limit, spec.sample)
    items = []
    for i in keep:
        item = normalize_row(rows[i], spec.kind or "math", i, where)
        item["benchmark"] = spec.name
        item["id"] = f"{spec.name}/{item['id']}"
        items.append(item)
    return items


def load_items(specs: list[BenchmarkSpec], data_root: Path, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """All items of a stage in a fixed global order (the order shards slice and merges restore)."""
    items: list[dict[str, Any]] = []
    for spec in specs:
        items.extend(load_benchmark(spec, data_root))
    items.extend(extra or [])
    seen: set[str] = set()
    for idx, it in enumerate(items):
        if it["id"] in seen:
            raise UserError(f"benchmark {it['benchmark']}: duplicate item id {it['id']}")
        seen.add(it["id"])
        it["index"] = idx
    return items
