"""The run directory: frozen config, per-stage shard outputs and markers, logs, jobs ledger.

Everything a user can see (what ran, what failed, what is left) is derived from here.

    runs/<name>/config.yaml                      frozen copy of the resolved config
    runs/<name>/stages/<stage>/shard-00003.jsonl output (or any files the stage writes)
    runs/<name>/stages/<stage>/shard-00003.done  completion marker, written last
    runs/<name>/stages/<stage>/shard-00003.failed  last failure (error, attempt)
    runs/<name>/stages/<stage>/shard-00003.progress.json  live counters of a running shard
    runs/<name>/logs/<stage>/...                 worker logs
    runs/<name>/jobs.jsonl                       ledger of every submission / launch
    runs/<name>/services/<stage>/                endpoints published by service stages
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skymath.errors import UserError
from skymath.records import atomic_write_text, write_marker


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---- layout -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def ledger_path(self) -> Path:
        return self.root / "jobs.jsonl"

    def stage_dir(self, stage: str) -> Path:
        return self.root / "stages" / stage

    def log_dir(self, stage: str) -> Path:
        return self.root / "logs" / stage

    def service_dir(self, stage: str) -> Path:
        return self.root / "services" / stage

    @staticmethod
    def shard_name(shard: int) -> str:
        return f"shard-{shard:05d}"

    def shard_path(self, stage: str, shard: int, suffix: str = ".jsonl") -> Path:
        return self.stage_dir(stage) / f"{self.shard_name(shard)}{suffix}"

    def done_path(self, stage: str, shard: int) -> Path:
        return self.shard_path(stage, shard, ".done")

    def failed_path(self, stage: str, shard: int) -> Path:
        return self.shard_path(stage, shard, ".failed")

    def progress_path(self, stage: str, shard: int) -> Path:
        """Live counters of a running shard (see ShardContext.report_progress)."""
        return self.shard_path(stage, shard, ".progress.json")

    def work_dir(self, stage: str, shard: int) -> Path:
        """Scratch space of one shard that survives restarts (caches, checkpoints)."""
        d = self.stage_dir(stage) / self.shard_name(shard)
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ---- config ---------------------------------------------------------------------------
    def freeze_config(self, text: str, reconfigure: bool = False) -> None:
        """Write the frozen config; a different config for an existing run is refused."""
        if self.config_path.exists() and not reconfigure:
            old = self.config_path.read_text(encoding="utf-8")
            if old != text:
                diff = _first_diff(old, text)
                raise UserError(
                    f"{self.config_path}: this run was started with a different config ({diff}); "
                    "pass --reconfigure to replace it, or choose another run.name"
                )
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, text)

    def load_config(self):
        from skymath.config import load_config

        if not self.config_path.exists():
            raise UserError(f"{self.root}: not a run directory (no config.yaml)")
        return load_config(self.config_path)

    # ---- markers ----------------------------------------------------------------------------
    def is_done(self, stage: str, shard: int) -> bool:
        return self.done_path(stage, shard).exists()

    def read_marker(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def mark_done(self, stage: str, shard: int, info: dict[str, Any]) -> None:
        self.failed_path(stage, shard).unlink(missing_ok=True)
        write_marker(self.done_path(stage, shard), {"stage": stage, "shard": shard, "finished_at": time.time(), **info})

    def mark_failed(self, stage: str, shard: int, error: str, **info: Any) -> None:
        old = self.read_marker(self.failed_path(stage, shard)) or {}
        write_marker(
            self.failed_path(stage, shard),
            {"stage": stage, "shard": shard, "error": error, "attempts": old.get("attempts", 0) + 1,
             "failed_at": time.time(), **info},
        )

    def done_shards(self, stage: str, num_shards: int) -> list[int]:
        return [i for i in range(num_shards) if self.is_done(stage, i)]

    def missing_shards(self, stage: str, num_shards: int) -> list[int]:
        return [i for i in range(num_shards) if not self.is_done(stage, i)]

    def failed_shards(self, stage: str, num_shards: int) -> list[int]:
        return [i for i in range(num_shards) if not self.is_done(stage, i) and self.failed_path(stage, i).exists()]

    def stage_complete(self, stage: str, num_shards: int) -> bool:
        return not self.missing_shards(stage, num_shards)

    def output_files(self, stage: str, num_shards: int, suffix: str = ".jsonl") -> list[Path]:
        """The finished record shards of a stage (only shards with a `.done` marker)."""
        return [self.shard_path(stage, i, suffix) for i in range(num_shards)
                if self.is_done(stage, i) and self.shard_path(stage, i, suffix).exists()]

    # ---- ledger ------------------------------------------------------------------------------
    def append_ledger(self, entry: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.time(), **entry}, default=str) + "\n"
        with open(self.ledger_path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def ledger(self) -> list[dict[str, Any]]:
        if not self.ledger_path.exists():
            return []
        out = []
        for line in self.ledger_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    @contextlib.contextmanager
    def stage_lock(self, stage: str) -> Iterator[None]:
        """An exclusive lock per stage (works across processes on one node and on NFS with lockd)."""
        d = self.stage_dir(stage)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _first_diff(old: str, new: str) -> str:
    for i, (a, b) in enumerate(zip(old.splitlines(), new.splitlines(), strict=False), start=1):
        if a != b:
            return f"first difference at line {i}: {a.strip()!r} -> {b.strip()!r}"
    return "lengths differ"
