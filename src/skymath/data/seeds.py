"""Seed problems: MATH train plus the recipe's other seed sets, normalized into Records.

Built-in sources read the files in data.root (../shared/data here); on a cluster the same
loaders take an HF hub dataset name or a local path, through `datasets`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from skymath.config.base import Strict
from skymath.errors import UserError
from skymath.records import Record


class FieldMap(Strict):
    problem: str = "problem"
    answer: str | None = "answer"
    solution: str | None = "solution"
    level: str | None = "level"
    subject: str | None = "subject"
    id: str | None = None
    source: str | None = "source"  # per-record section (e.g. agieval:math), used by include/exclude


class SourceSpec(Strict):
    """One seed set: a built-in name, or a custom file / HF dataset with a field map."""

    name: str
    path: str | None = None  # local JSONL/JSON/parquet file (relative to data.root) or directory
    hf_dataset: str | None = None  # e.g. "EleutherAI/hendrycks_math" (cluster: needs network or HF cache)
    hf_config: str | None = None
    split: str = "train"
    fields: FieldMap | None = None
    include_sections: list[str] | None = None  # keep only these per-record `source` values
    exclude_sections: list[str] = Field(default_factory=list)
    format: Literal["json", "parquet", "csv"] = "json"


# Built-ins. AGIEval's `agieval:math` section is drawn from the MATH *test* split, so it is
# excluded by default (using it as seeds would leak the benchmark into training).
BUILTIN: dict[str, dict[str, Any]] = {
    "math_train": {"path": "math_train.jsonl.gz", "fields": {"subject": "type", "id": "unique_id", "source": None}},
    "olympiadbench": {"path": "olympiadbench_math_en.jsonl", "fields": {"id": "id", "level": None}},
    "agieval": {"path": "agieval_math.jsonl", "fields": {"id": "index"}, "exclude_sections": ["agieval:math"]},
    "scibench": {"path": "scibench_math.jsonl", "fields": {"id": "problemid", "level": None}},
    "jeebench": {"path": "jeebench_math.jsonl", "fields": {"id": "index", "level": None, "solution": None}},
    "gsm8k_train": {"path": "gsm8k_train.jsonl", "fields": {"problem": "question", "answer": "final",
                                                              "solution": "answer", "level": None, "subject": None,
                                                              "source": None}},
}

_LEVEL_RE = re.compile(r"(\d+)")


def parse_level(value: Any) -> int | None:
    """'Level 4' -> 4; 'Level ?' / None -> None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    m = _LEVEL_RE.search(str(value))
    return int(m.group(1)) if m else None


def resolve_spec(src: str | SourceSpec) -> SourceSpec:
    if isinstance(src, SourceSpec):
        if src.name in BUILTIN and src.path is None and src.hf_dataset is None:
            base = dict(BUILTIN[src.name])
            merged = {**base, **src.model_dump(exclude_unset=True)}
            return SourceSpec.model_validate(merged)
        return src
    if src not in BUILTIN:
        raise UserError(f"unknown seed source {src!r} (built-in: {', '.join(BUILTIN)}; or give a mapping with path/hf_dataset)")
    return SourceSpec.model_validate({"name": src, **BUILTIN[src]})


def _load_rows(spec: SourceSpec, data_root: Path, cache_dir: Path | None) -> list[dict[str, Any]]:
    import datasets

    datasets.disable_progress_bars()
    kw: dict[str, Any] = {"cache_dir": str(cache_dir)} if cache_dir else {}
    if spec.hf_dataset:
        try:
            ds = datasets.load_dataset(spec.hf_dataset, spec.hf_config, split=spec.split, **kw)
        except Exception as e:  # noqa: BLE001 - any hub/IO error becomes one line
            raise UserError(f"seed source {spec.name}: cannot load HF dataset {spec.hf_dataset!r}: {e}") from None
        return list(ds)
    if not spec.path:
        raise UserError(f"seed source {spec.name}: give `path` or `hf_dataset`")
    path = Path(spec.path)
    if not path.is_absolute() and not path.exists():
        path = data_root / path
    if not path.exists():
        raise UserError(f"seed source {spec.name}: file not found: {path}")
    files = sorted(str(p) for p in path.glob("*.json*")) if path.is_dir() else [str(path)]
    try:
        ds = datasets.load_dataset(spec.format, data_files=files, split="train", **kw)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"seed source {spec.name}: cannot read {path}: {type(e).__name__}: {e}") from None
    return list(ds)


def load_source(src: str | SourceSpec, data_root: Path, cache_dir: Path | None = None) -> list[Record]:
    """All records of one source, normalized (id, problem, response=reference solution, answer, level, subject)."""
    spec = resolve_spec(src)
    fm = spec.fields or FieldMap()
    rows = _load_rows(spec, data_root, cache_dir)
    out: list[Record] = []
    for i, row in enumerate(rows):
        if fm.problem not in row:
            raise UserError(f"seed source {spec.name}: row {i} has no field {fm.problem!r} (fields: {', '.join(row)})")
        section = row.get(fm.source) if fm.source else None
        if spec.include_sections is not None and section not in spec.include_sections:
            continue
        if section in spec.exclude_sections:
            continue
        problem = str(row[fm.problem] or "").strip()
        if not problem:
            continue
        rid = row.get(fm.id) if fm.id else None
        answer = row.get(fm.answer) if fm.answer else None
        solution = row.get(fm.solution) if fm.solution else None
        out.append(
            Record(
                id=f"{spec.name}:{rid if rid is not None else i}",
                problem=problem,
                response=str(solution) if solution else None,
                answer=None if answer is None else str(answer),
                source=str(section or spec.name),
                level=parse_level(row.get(fm.level)) if fm.level else None,
                subject=str(row[fm.subject]) if fm.subject and row.get(fm.subject) else None,
                stage="seeds",
            )
        )
    return out


def load_seeds(
    sources: list[str | SourceSpec],
    data_root: Path,
    levels: list[int] | None = None,
    subjects: list[str] | None = None,
    limit: int | None = None,
    sample_seed: int | None = None,
    cache_dir: Path | None = None,
) -> list[Record]:
    """Every selected seed, in a deterministic order (source order, then file order)."""
    records: list[Record] = []
    for src in sources:
        records.extend(load_source(src, data_root, cache_dir))
    if levels is not None:
        records = [r for r in records if r.level in levels]
    if subjects is not None:
        records = [r for r in records if r.subject in subjects]
    if sample_seed is not None:
        import random

        rng = random.Random(sample_seed)
        rng.shuffle(records)
    if limit is not None:
        records = records[:limit]
    return records
