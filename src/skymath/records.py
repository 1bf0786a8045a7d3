"""The one record schema and crash-safe JSONL shard I/O.

Writers append to `<shard>.partial` with periodic flush+fsync, finalize by atomic rename and
write the `.done` marker last, so a half-written shard never looks complete. Readers
quarantine a corrupt line into `<shard>.bad.jsonl` (line number + reason) and keep going.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skymath.errors import UserError


class Record(BaseModel):
    """One problem (and optionally its response) anywhere in the pipeline."""

    model_config = ConfigDict(extra="forbid")

    id: str
    problem: str
    response: str | None = None
    answer: str | None = None
    source: str = ""
    level: int | None = None
    subject: str | None = None
    method: str | None = None
    stage: str | None = None
    parent_id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), ensure_ascii=False, separators=(",", ":"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + fsync + rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_marker(path: Path, info: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(info, indent=1, sort_keys=True, default=str) + "\n")


class DuplicateIdError(UserError):
    """Two records with the same id: an error naming both (ids key resume, unit logs and joins, so a
    repeated id would silently lose or merge data). Stages that deduplicate on purpose say so."""


class ShardWriter:
    """Append records to `<path>.partial`; `close()` renames to `path` and writes the marker.

    With `resume=True` an existing `.partial` from an interrupted run is kept: a torn last
    line is cut off and `existing_ids` tells the caller what is already written, so a
    restarted shard continues instead of starting over. Offering a record whose id was
    recovered that way is a resume skip (`write` returns False, counted in `resumed_skips`);
    writing an id twice otherwise raises `DuplicateIdError` naming both lines.
    """

    def __init__(
        self,
        path: str | Path,
        done_path: str | Path | None = None,
        resume: bool = False,
        flush_every: int = 50,
        flush_seconds: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.done_path = Path(done_path) if done_path else None
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lines: dict[str, int] = {}  # id -> line number in the shard file
        self._origins: dict[str, str] = {}  # id -> where the caller said the record came from
        self._recovered = 0  # lines 1.._recovered came from an interrupted run
        self._reoffered: set[str] = set()
        self._line_no = 0
        self.resumed_skips = 0
        if resume and not self.partial.exists() and self.path.exists():
            # a finished shard run again (worker --force): continue from its output, never over it
            shutil.copyfile(self.path, self.partial)
        if resume and self.partial.exists():
            self._recover_partial()
            mode = "a"
        else:
            mode = "w"
        self.count = len(self._lines)
        self._f = open(self.partial, mode, encoding="utf-8")
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self.closed = False
        self.meta: dict[str, Any] = {}

    @property
    def existing_ids(self):
        """Ids already in the shard (a set-like view)."""
        return self._lines.keys()

    def _recover_partial(self) -> None:
        data = self.partial.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # torn last line from a crash: drop it
            with open(self.partial, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        lines = data.decode("utf-8", errors="replace").split("\n")[:-1]  # records may hold U+2028
        for lineno, line in enumerate(lines, start=1):
            try:
                rid = json.loads(line).get("id")
            except (json.JSONDecodeError, AttributeError):
                continue
            if rid is not None:
                self._lines.setdefault(rid, lineno)
        self._recovered = len(lines)
        self._line_no = len(lines)

    def _duplicate(self, rid: str, first: int, origin: str | None) -> None:
        """Raise the error that names both records (line numbers in this shard, and origins)."""
        def where(line: int, org: str | None) -> str:
            return f"{self.path.name} line {line}" + (f" (from {org})" if org else "")

        self.flush()
        second = self._line_no + 1
        raise DuplicateIdError(f"{self.path.parent}: duplicate record id {rid!r}: "
                               f"{where(first, self._origins.get(rid))} and {where(second, origin)}")

    def __contains__(self, record_id: str) -> bool:
        return record_id in self._lines

    def write(self, record: Record | dict[str, Any], origin: str | None = None) -> bool:
        """Write one record. Returns False (writing nothing) only for an id recovered from an
        interrupted run (resume); any other repeated id raises DuplicateIdError naming both.
        `origin` (e.g. `file:line` of the input) is named in that error."""
        if isinstance(record, dict):
            record = Record.model_validate(record)
        rid = record.id
        first = self._lines.get(rid)
        if first is not None:
            if first <= self._recovered and rid not in self._reoffered:
                self._reoffered.add(rid)
                self.resumed_skips += 1
                return False
            self._duplicate(rid, first, origin)
        self._f.write(record.to_json() + "\n")
        self._line_no += 1
        self._lines[rid] = self._line_no
        if origin is not None:
            self._origins[rid] = origin
        self.count += 1
        self._unflushed += 1
        if self._unflushed >= self.flush_every or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()
        return True

    def write_many(self, records: Iterable[Record | dict[str, Any]]) -> int:
        return sum(self.write(r) for r in records)

    def flush(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._unflushed = 0
        self._last_flush = time.monotonic()

    def close(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finalize: fsync, atomic rename, then the `.done` marker (count + sha256) last."""
        if self.closed:
            return self.meta
        self.flush()
        self._f.close()
        os.replace(self.partial, self.path)
        _fsync_dir(self.path.parent)
        self.closed = True
        self.meta = {"records": self.count, "sha256": sha256_file(self.path), "file": self.path.name}
        if extra:
            self.meta.update(extra)
        if self.done_path is not None:
            write_marker(self.done_path, {**self.meta, "finished_at": time.time()})
        return self.meta

    def abort(self) -> None:
        """Leave the `.partial` in place (resumable) without finalizing."""
        if not self.closed:
            try:
                self.flush()
            finally:
                self._f.close()
                self.closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def bad_path_for(path: Path) -> Path:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return path.with_name(name + ".bad.jsonl")


class ShardReader:
    """Iterate the JSON objects of a JSONL file (optionally validated as Records).

    A line that is not valid JSON (or not a valid record) is appended to `<shard>.bad.jsonl`
    with its line number and the reason, and reading goes on; `bad` counts them.
    """

    def __init__(self, path: str | Path, as_records: bool = True, quarantine: bool = True) -> None:
        self.path = Path(path)
        self.as_records = as_records
        self.quarantine = quarantine
        self.bad = 0
        self.lineno = 0  # line number of the record last yielded
        self.bad_path = bad_path_for(self.path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: input file not found")

    def _quarantine(self, lineno: int, line: str, reason: str) -> None:
        self.bad += 1
        if not self.quarantine:
            return
        entry = {"file": str(self.path), "line": lineno, "reason": reason, "text": line[:10000]}
        with open(self.bad_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def __iter__(self) -> Iterator[Any]:
        if self.quarantine and self.bad_path.exists():
            self.bad_path.unlink()  # re-reading rewrites the quarantine, never doubles it
        with _open_text(self.path) as f:
            for lineno, line in enumerate(f, start=1):
                self.lineno = lineno
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    self._quarantine(lineno, line, f"invalid JSON: {e.msg} at column {e.colno}")
                    continue
                if not self.as_records:
                    yield obj
                    continue
                try:
                    yield Record.model_validate(obj)
                except ValidationError as e:
                    err = e.errors()[0]
                    key = ".".join(str(p) for p in err["loc"])
                    self._quarantine(lineno, line, f"invalid record: {key}: {err['msg']}")


def read_records(paths: str | Path | Iterable[str | Path], unique: bool = True) -> Iterator[Record]:
    """Records of one or several shard files, in order, quarantining bad lines.

    `unique=True` (the default) raises DuplicateIdError naming both `file:line`s when an id
    repeats across the files: a stage that deduplicates by id on purpose passes False."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    seen: dict[str, int] = {}  # id -> (file index << 32) | line: one int per record
    files: list[Path] = []
    for p in paths:
        reader = ShardReader(p)
        files.append(reader.path)
        for rec in reader:
            if unique:
                here = ((len(files) - 1) << 32) | reader.lineno
                first = seen.setdefault(rec.id, here)
                if first != here:
                    raise DuplicateIdError(f"duplicate record id {rec.id!r}: {files[first >> 32]}:{first & 0xFFFFFFFF} "
                                           f"and {reader.path}:{reader.lineno}")
            yield rec


def iter_with_origin(paths: Iterable[str | Path]) -> Iterator[tuple[Record, str]]:
    """(record, "file:line") for every record of the files, in order (no uniqueness check)."""
    for p in paths:
        reader = ShardReader(p)
        for rec in reader:
            yield rec, f"{reader.path}:{reader.lineno}"


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Plain JSON objects of a (possibly gzipped) JSONL file, quarantining bad lines."""
    yield from ShardReader(path, as_records=False)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any] | BaseModel]) -> int:
    """Write rows atomically (temp + rename). Returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            if isinstance(row, BaseModel):
                row = row.model_dump()
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n
