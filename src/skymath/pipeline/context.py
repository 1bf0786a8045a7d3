"""What a stage's `run(ctx)` gets: its params, its shard, its inputs, a writer, progress, stop flag."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymath.config.schema import PipelineConfig, StageSpec
from skymath.errors import UserError
from skymath.pipeline.rundir import RunDir
from skymath.records import Record, ShardWriter, read_records


@dataclass
class ShardContext:
    run: RunDir
    config: PipelineConfig
    stage_name: str
    shard: int
    stop_event: threading.Event = field(default_factory=threading.Event)
    writers: list[ShardWriter] = field(default_factory=list)

    # ---- identity ---------------------------------------------------------------------------
    @property
    def spec(self) -> StageSpec:
        return self.config.stages[self.stage_name]

    @property
    def params(self) -> Any:
        return self.spec.params

    @property
    def num_shards(self) -> int:
        return self.spec.num_shards

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"skymath.{self.stage_name}.{self.shard}")

    # ---- paths -------------------------------------------------------------------------------
    @property
    def stage_dir(self) -> Path:
        return self.run.stage_dir(self.stage_name)

    def output_path(self, suffix: str = ".jsonl") -> Path:
        return self.run.shard_path(self.stage_name, self.shard, suffix)

    @property
    def work_dir(self) -> Path:
        return self.run.work_dir(self.stage_name, self.shard)

    def data_path(self, name: str | Path) -> Path:
        """A data file: absolute, relative to the working directory, or inside data.root."""
        p = Path(name)
        if p.is_absolute() or p.exists():
            return p
        cand = Path(self.config.data.root) / p
        if cand.exists():
            return cand
        raise UserError(f"stages.{self.stage_name}: data file {name!s} not found (looked in {self.config.data.root})")

    # ---- inputs -------------------------------------------------------------------------------
    def input_paths(self, stage: str | None = None) -> list[Path]:
        """Finished record shards of one dependency (default: every dependency)."""
        names = [stage] if stage else list(self.spec.depends_on)
        out: list[Path] = []
        for name in names:
            dep = self.config.stages[name]
            if not self.run.stage_complete(name, dep.num_shards):
                missing = self.run.missing_shards(name, dep.num_shards)
                raise UserError(f"stage {self.stage_name}: input stage {name!r} is incomplete (missing shards {missing[:10]})")
            out.extend(self.run.output_files(name, dep.num_shards))
        return out

    def iter_inputs(self, stage: str | None = None) -> Iterator[Record]:
        return read_records(self.input_paths(stage))

    def my_slice(self, items: list[Any]) -> list[Any]:
        """Deterministic contiguous split of a list into num_shards parts: this shard's part."""
        n, k = len(items), self.num_shards
        lo = (n * self.shard) // k
        hi = (n * (self.shard + 1)) // k
        return items[lo:hi]

    # ---- outputs ------------------------------------------------------------------------------
    def writer(self, suffix: str = ".jsonl", resume: bool = True) -> ShardWriter:
        """A resumable writer for this shard's output; the worker finalizes it and writes `.done`."""
        w = ShardWriter(self.output_path(suffix), resume=resume)
        self.writers.append(w)
        return w

    def progress(self, total: int | None = None, desc: str | None = None, unit: str = "it", **kw: Any):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc or f"{self.stage_name}[{self.shard}]", unit=unit, file=sys.stderr,
                    mininterval=kw.pop("mininterval", 1.0), dynamic_ncols=False, ascii=True, **kw)

    # ---- signals / services ------------------------------------------------------------------------
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    def service_endpoints(self, service: str, wait_s: float = 0.0) -> list[dict[str, Any]]:
        """Endpoints published by a service stage (`services/<stage>/endpoint-*.json`), waiting up to wait_s."""
        d = self.run.service_dir(service)
        deadline = time.monotonic() + wait_s
        while True:
            eps = []
            for p in sorted(d.glob("endpoint-*.json")) if d.exists() else []:
                try:
                    eps.append(json.loads(p.read_text(encoding="utf-8")))
                except (OSError, json.JSONDecodeError):
                    continue
            if eps or time.monotonic() >= deadline or self.stop_requested():
                return eps
            time.sleep(0.5)
