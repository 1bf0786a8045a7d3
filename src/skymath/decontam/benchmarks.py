"""Benchmark test sets to decontaminate against: built-in files in data.root, any local
JSONL, or an HF dataset (on a cluster with the hub or an HF cache).

GSM8K solutions are normalized the way the benchmark's own code reads them before their n-grams
are taken: the `<<16-3-4=9>>` calculator annotations are dropped (they are the calculator's
input, not text a model writes: "16 - 3 - 4 = <<16-3-4=9>>9" becomes "16 - 3 - 4 = 9") and the
final `#### N` line, the answer marker that grade-school-math's `extract_answer` parses, is
removed. Without this a GSM8K solution copied into a synthetic response almost never shares a
30-gram with the raw test file. The raw form is indexed as well (same test id): a model that
memorized GSM8K may reproduce the annotations.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from skymath.config.base import Strict
from skymath.errors import UserError


class BenchmarkSpec(Strict):
    """One test set. `path` is relative to data.root unless absolute; or `hf_dataset` + `split`."""

    name: str
    path: str | None = None
    hf_dataset: str | None = None
    hf_config: str | None = None
    split: str = "test"
    problem_field: str = "problem"
    solution_field: str | None = "solution"
    id_field: str | None = None  # default: "<name>:<row number>"
    solution_format: Literal["plain", "gsm8k"] = "plain"  # gsm8k: drop <<calc>> annotations and `#### N`


BUILTIN: dict[str, dict[str, Any]] = {
    "gsm8k": {"path": "gsm8k_test.jsonl", "problem_field": "question", "solution_field": "answer",
              "solution_format": "gsm8k"},
    "math": {"path": "math_test.jsonl", "id_field": "unique_id"},
    "math500": {"path": "math500_test.jsonl", "id_field": "unique_id"},
}


@dataclass(frozen=True)
class BenchItem:
    benchmark: str
    test_id: str
    problem: str
    solution: str


_CALC = re.compile(r"<<[^<>]*>>")
_ANSWER_LINE = re.compile(r"(?m)^\s*####.*$")
NORMALIZE_VERSION = "gsm8k-v2"  # part of the index cache key: change it whenever the items change


def normalize_solution(text: str, fmt: str) -> str:
    """A solution as text a model could write: GSM8K without calculator annotations and without
    its `#### N` answer line."""
    if fmt != "gsm8k" or not text:
        return text
    text = _CALC.sub("", text)
    text = _ANSWER_LINE.sub("", text)
    return text.strip()


def resolve_benchmark(b: str | BenchmarkSpec) -> BenchmarkSpec:
    if isinstance(b, BenchmarkSpec):
        if b.name in BUILTIN and b.path is None and b.hf_dataset is None:
            return BenchmarkSpec.model_validate({**BUILTIN[b.name], **b.model_dump(exclude_unset=True)})
        if b.path is None and b.hf_dataset is None:
            raise UserError(f"benchmark {b.name!r}: give `path` or `hf_dataset` (built-in: {', '.join(BUILTIN)})")
        return b
    if b not in BUILTIN:
        raise UserError(f"unknown benchmark {b!r} (built-in: {', '.join(BUILTIN)}; or a mapping with path/hf_dataset)")
    return BenchmarkSpec.model_validate({"name": b, **BUILTIN[b]})


def _local_path(spec: BenchmarkSpec, data_root: Path) -> Path:
    p = Path(spec.path or "")
    if not p.is_absolute() and not p.exists():
        p = Path(data_root) / p
    if not p.is_file():
        raise UserError(f"benchmark {spec.name}: file not found: {p}")
    return p


def source_key(spec: BenchmarkSpec, data_root: Path) -> str:
    """What identifies the benchmark's content (for index caches): file sha256, or the HF coordinates."""
    if spec.hf_dataset:
        ident = f"hf:{spec.hf_dataset}:{spec.hf_config}:{spec.split}"
    else:
        from skymath.records import sha256_file

        ident = f"file:{sha256_file(_local_path(spec, data_root))}"
    ident += f"|{spec.problem_field}|{spec.solution_field}|{spec.id_field}|{spec.name}"
    if spec.solution_format != "plain":
        ident += f"|{spec.solution_format}|{NORMALIZE_VERSION}"
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def _rows(spec: BenchmarkSpec, data_root: Path, cache_dir: Path | None) -> list[dict[str, Any]]:
    if spec.hf_dataset:
        import datasets

        kw: dict[str, Any] = {"cache_dir": str(cache_dir)} if cache_dir else {}
        try:
            return list(datasets.load_dataset(spec.hf_dataset, spec.hf_config, split=spec.split, **kw))
        except Exception as e:  # noqa: BLE001 - any hub/IO error becomes one line
            raise UserError(f"benchmark {spec.name}: cannot load HF dataset {spec.hf_dataset!r}: {e}") from None
    from skymath.records import read_jsonl

    return list(read_jsonl(_local_path(spec, data_root)))


def load_benchmark(b: str | BenchmarkSpec, data_root: Path, cache_dir: Path | None = None) -> list[BenchItem]:
    spec = resolve_benchmark(b)
    out: list[BenchItem] = []
    for i, row in enumerate(_rows(spec, data_root, cache_dir)):
        if spec.problem_field not in row:
            raise UserError(f"benchmark {spec.name}: row {i}: no field {spec.problem_field!r} (fields: {', '.join(row)})")
        tid = row.get(spec.id_field) if spec.id_field else None
        sol = row.get(spec.solution_field) if spec.solution_field else None
        test_id, problem, raw = f"{spec.name}:{tid if tid is not None else i}", str(row[spec.problem_field] or ""), str(sol or "")
        text = normalize_solution(raw, spec.solution_format)
        out.append(BenchItem(spec.name, test_id, problem, text))
        if text != raw:  # the raw form too: a model that memorized GSM8K may write the annotations
            out.append(BenchItem(spec.name, test_id, problem, raw))
    return out
