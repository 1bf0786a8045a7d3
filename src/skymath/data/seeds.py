"""Seed problems: MATH train plus the recipe's other seed sets, normalized into Records.

Built-in sources read the files in data.root (../shared/data here); on a cluster the same
loaders take an HF hub dataset name or a local path.

Ids are unique per source AND section (`agieval:sat-math:12`, `jeebench:JEE Adv 2016 Paper 1:37`,
`scibench:stat:test:5.8-5`): upstream ids repeat across sections, and a repeated id used to make
the writer and the synthesis planner drop seeds without a word. A repeated id is now an error
naming both rows (file:line), unless the source declares `on_duplicate_id: number` (SciBench
reuses a problem id for the parts of one textbook problem: the k-th repeat gets `~k`).
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass, field
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
    id: str | list[str] | None = None  # one field, or several joined with ":" (unique within a section)
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
    # a repeated id within the source: an error naming both rows, or number the repeats (`~2`, `~3`)
    on_duplicate_id: Literal["error", "number"] = "error"


# Built-ins. AGIEval's `agieval:math` section is drawn from the MATH *test* split, so it is
# excluded by default (using it as seeds would leak the benchmark into training).
BUILTIN: dict[str, dict[str, Any]] = {
    "math_train": {"path": "math_train.jsonl.gz", "fields": {"subject": "type", "id": "unique_id", "source": None}},
    "olympiadbench": {"path": "olympiadbench_math_en.jsonl", "fields": {"id": "id", "level": None}},
    "agieval": {"path": "agieval_math.jsonl", "fields": {"id": "index"}, "exclude_sections": ["agieval:math"]},
    # upstream gives 3 pairs of different problems the same (section, split, problemid)
    "scibench": {"path": "scibench_math.jsonl", "fields": {"id": ["split", "problemid"], "level": None},
                 "on_duplicate_id": "number"},
    "jeebench": {"path": "jeebench_math.jsonl", "fields": {"id": ["exam", "index"], "level": None, "solution": None}},
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


@dataclass
class SeedSet:
    """What loading produced: the selected records, where each came from, and what was left out why."""

    records: list[Record] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # record id -> "file:line" / "dataset row i"
    dropped: list[dict[str, str]] = field(default_factory=list)  # {origin, reason}: never silent
    loaded: Counter = field(default_factory=Counter)  # source name -> rows read

    def by_source(self) -> dict[str, int]:
        return dict(Counter(r.id.split(":", 1)[0] for r in self.records))


def _read_json_file(path: Path) -> list[tuple[dict[str, Any], str]]:
    """Rows of a JSONL (optionally .gz) or JSON-list file, each with its `file:line` origin."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        return [(r, f"{path}[{i}]") for i, r in enumerate(rows)]
    out = []
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: invalid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        out.append((row, f"{path}:{lineno}"))
    return out


def _load_rows(spec: SourceSpec, data_root: Path, cache_dir: Path | None) -> list[tuple[dict[str, Any], str]]:
    if spec.hf_dataset:
        import datasets

        datasets.disable_progress_bars()
        kw: dict[str, Any] = {"cache_dir": str(cache_dir)} if cache_dir else {}
        try:
            ds = datasets.load_dataset(spec.hf_dataset, spec.hf_config, split=spec.split, **kw)
        except Exception as e:  # noqa: BLE001 - any hub/IO error becomes one line
            raise UserError(f"seed source {spec.name}: cannot load HF dataset {spec.hf_dataset!r}: {e}") from None
        return [(row, f"{spec.hf_dataset}[{spec.split}] row {i}") for i, row in enumerate(ds)]
    if not spec.path:
        raise UserError(f"seed source {spec.name}: give `path` or `hf_dataset`")
    path = Path(spec.path)
    if not path.is_absolute() and not path.exists():
        path = data_root / path
    if not path.exists():
        raise UserError(f"seed source {spec.name}: file not found: {path}")
    files = sorted(p for p in path.glob("*.json*")) if path.is_dir() else [path]
    if spec.format == "json":
        return [row for f in files for row in _read_json_file(f)]
    import datasets

    datasets.disable_progress_bars()
    kw = {"cache_dir": str(cache_dir)} if cache_dir else {}
    try:
        ds = datasets.load_dataset(spec.format, data_files=[str(f) for f in files], split="train", **kw)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"seed source {spec.name}: cannot read {path}: {type(e).__name__}: {e}") from None
    return [(row, f"{path} row {i}") for i, row in enumerate(ds)]


def _section_tail(name: str, section: Any) -> str | None:
    """The section part of an id: `agieval:sat-math` -> `sat-math`; a section equal to the name -> None."""
    if section is None:
        return None
    s = str(section)
    if s == name:
        return None
    return s[len(name) + 1:] if s.startswith(name + ":") else s


def _id_value(fm: FieldMap, row: dict[str, Any], origin: str) -> str | None:
    if fm.id is None:
        return None
    names = [fm.id] if isinstance(fm.id, str) else fm.id
    values = []
    for n in names:
        v = row.get(n)
        if v is None or str(v) == "":
            raise UserError(f"{origin}: id field {n!r} is missing or empty (fields: {', '.join(row)})")
        values.append(str(v))
    return ":".join(values)


def load_source(src: str | SourceSpec, data_root: Path, cache_dir: Path | None = None,
                into: SeedSet | None = None) -> SeedSet:
    """All records of one source, normalized (id, problem, response=reference solution, answer, level, subject)."""
    spec = resolve_spec(src)
    fm = spec.fields or FieldMap()
    out = into if into is not None else SeedSet()
    first_of: dict[str, str] = {}
    repeats: Counter[str] = Counter()
    for i, (row, origin) in enumerate(_load_rows(spec, data_root, cache_dir)):
        out.loaded[spec.name] += 1
        if fm.problem not in row:
            raise UserError(f"{origin}: seed source {spec.name}: no field {fm.problem!r} (fields: {', '.join(row)})")
        section = row.get(fm.source) if fm.source else None
        if spec.include_sections is not None and section not in spec.include_sections:
            continue
        if section in spec.exclude_sections:
            continue
        problem = str(row[fm.problem] or "").strip()
        if not problem:
            out.dropped.append({"origin": origin, "source": spec.name, "reason": "empty problem"})
            continue
        rid = _id_value(fm, row, origin)
        parts = [spec.name]
        tail = _section_tail(spec.name, section)
        if tail:
            parts.append(tail)
        parts.append(rid if rid is not None else str(i))
        record_id = ":".join(parts)
        if record_id in first_of:
            if spec.on_duplicate_id != "number":
                raise UserError(f"seed source {spec.name}: duplicate id {record_id!r}: {first_of[record_id]} and "
                                f"{origin} (map `fields.id` to a unique field or list of fields, or set "
                                "`on_duplicate_id: number`)")
            repeats[record_id] += 1
            record_id = f"{record_id}~{repeats[record_id] + 1}"
        first_of.setdefault(record_id, origin)
        answer = row.get(fm.answer) if fm.answer else None
        solution = row.get(fm.solution) if fm.solution else None
        rec = Record(
            id=record_id,
            problem=problem,
            response=str(solution) if solution else None,
            answer=None if answer is None else str(answer),
            source=str(section or spec.name),
            level=parse_level(row.get(fm.level)) if fm.level else None,
            subject=str(row[fm.subject]) if fm.subject and row.get(fm.subject) else None,
            stage="seeds",
        )
        if rec.id in out.origins:  # the same id from two sources
            raise UserError(f"duplicate seed id {rec.id!r}: {out.origins[rec.id]} and {origin} "
                            "(two sources share a name? give each a distinct `name`)")
        out.origins[rec.id] = origin
        out.records.append(rec)
    return out


def load_seed_set(
    sources: list[str | SourceSpec],
    data_root: Path,
    levels: list[int] | None = None,
    subjects: list[str] | None = None,
    limit: int | None = None,
    sample_seed: int | None = None,
    cache_dir: Path | None = None,
) -> SeedSet:
    """Every selected seed, in a deterministic order (source order, then file order), with origins."""
    ss = SeedSet()
    for src in sources:
        load_source(src, data_root, cache_dir, into=ss)
    records = ss.records
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
    ss.records = records
    return ss


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
    return load_seed_set(sources, data_root, levels, subjects, limit, sample_seed, cache_dir).records
