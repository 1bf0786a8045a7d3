"""What a stage's `run(ctx)` gets: its params, its shard, its inputs, a writer, progress, stop flag.

Progress of a running shard goes to `stages/<stage>/shard-NNNNN.progress.json` (records,
requests, tokens, dollars, units done/total, pid, host, updated time): `skymath status --watch`
sums these files for the whole run, so a day-long 1,024-shard synthesis is visible as one table.
Writes are throttled (at most one every PROGRESS_INTERVAL_S) and atomic (temp file + rename).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymath.config.schema import PipelineConfig, StageSpec
from skymath.errors import UserError
from skymath.pipeline.procs import process_start
from skymath.pipeline.rundir import RunDir
from skymath.records import Record, ShardWriter, read_records

# seconds between two progress-file writes of one shard (a 1,024-shard array on NFS: ~340 writes/s
# at 3 s, each a few hundred bytes); tests lower it through the environment
PROGRESS_INTERVAL_S = float(os.environ.get("SKYMATH_PROGRESS_INTERVAL_S", "3"))
PROGRESS_FIELDS = ("records", "requests", "tokens_in", "tokens_out", "cost_usd", "failed", "done", "total")
_log = logging.getLogger("skymath.progress")


@dataclass
class ShardContext:
    run: RunDir
    config: PipelineConfig
    stage_name: str
    shard: int
    stop_event: threading.Event = field(default_factory=threading.Event)
    writers: list[ShardWriter] = field(default_factory=list)
    _progress: dict[str, Any] = field(default_factory=dict, repr=False)
    _progress_written: float = field(default=0.0, repr=False)
    _progress_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _records_explicit: bool = field(default=False, repr=False)
    _heartbeat_stop: threading.Event | None = field(default=None, repr=False)

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
        self.report_progress()  # records resumed from a partial file are not this attempt's rate
        return w

    def progress(self, total: int | None = None, desc: str | None = None, unit: str = "it", **kw: Any):
        """A tqdm bar for the log that also feeds units done/total into the shard's progress file."""
        from tqdm import tqdm

        ctx = self

        class _Bar(tqdm):
            def update(self, n: float | None = 1) -> bool | None:
                out = super().update(n)
                ctx.report_progress(done=int(self.n), total=None if self.total is None else int(self.total))
                return out

        bar = _Bar(total=total, desc=desc or f"{self.stage_name}[{self.shard}]", unit=unit, file=sys.stderr,
                   mininterval=kw.pop("mininterval", 1.0), dynamic_ncols=False, ascii=True, **kw)
        self.report_progress(done=int(bar.n), total=None if bar.total is None else int(bar.total))
        return bar

    # ---- progress file -------------------------------------------------------------------------
    @property
    def progress_path(self) -> Path:
        return self.run.progress_path(self.stage_name, self.shard)

    def report_progress(self, *, records: int | None = None, requests: int | None = None,
                        tokens_in: int | None = None, tokens_out: int | None = None,
                        cost_usd: float | None = None, failed: int | None = None,
                        done: int | None = None, total: int | None = None, usage: dict | None = None,
                        force: bool = False) -> None:
        """Record this shard's cumulative counters (None keeps the last value); written to the
        progress file at most every PROGRESS_INTERVAL_S unless `force`. `records` defaults to
        what this shard's writers hold; `usage` is an accounting totals dict (requests,
        prompt_tokens, completion_tokens, cost_usd). Never raises: progress must not fail a shard."""
        if usage:
            requests = usage.get("requests", requests)
            tokens_in = usage.get("prompt_tokens", tokens_in)
            tokens_out = usage.get("completion_tokens", tokens_out)
            cost_usd = usage.get("cost_usd", cost_usd)
            if usage.get("reference_cost_usd") is not None:
                self._progress["ref_cost_usd"] = usage["reference_cost_usd"]  # what the reference model would charge
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun only rank 0 speaks for the shard (as for its markers)
        values = {"records": records, "requests": requests, "tokens_in": tokens_in, "tokens_out": tokens_out,
                  "cost_usd": cost_usd, "failed": failed, "done": done, "total": total}
        now = time.time()
        with self._progress_lock:
            p = self._progress
            if not p:
                p.update(stage=self.stage_name, shard=self.shard, pid=os.getpid(), host=socket.gethostname(),
                         pid_start=process_start(os.getpid()), started=now, state="running")
                job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
                if job:
                    task = os.environ.get("SLURM_ARRAY_TASK_ID")
                    p["job_id"] = f"{job}_{task}" if task and os.environ.get("SLURM_ARRAY_JOB_ID") else job
            for k, v in values.items():
                if v is not None:
                    p[k] = v
                    if k in ("records", "done"):
                        p.setdefault(f"{k}_start", v)  # what this attempt resumed from (for rates)
            self._records_explicit |= records is not None
            if not self._records_explicit and self.writers:
                n = sum(w.count for w in self.writers)
                p["records"] = n
                p.setdefault("records_start", n)
            if not force and now - self._progress_written < PROGRESS_INTERVAL_S:
                return
            self._progress_written = now
            p["updated"] = now
            self._write_progress(dict(p))

    def start_progress(self, heartbeat_s: float | None = None) -> None:
        """First progress write (running, pid, host), then a daemon thread rewrites it every
        heartbeat_s: records written so far and a fresh `updated` for any stage, even one that
        never reports anything itself."""
        self.report_progress(force=True)
        if self._heartbeat_stop is not None or os.environ.get("RANK", "0") != "0":
            return
        every = heartbeat_s if heartbeat_s is not None else max(PROGRESS_INTERVAL_S, 1.0)
        stop = self._heartbeat_stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                self.report_progress(force=True)

        threading.Thread(target=beat, name="skymath-progress", daemon=True).start()

    def finish_progress(self, state: str) -> None:
        """Last write of the progress file when the shard ends ("ended"; the markers say how)."""
        if self._heartbeat_stop is not None:
            self._heartbeat_stop.set()
        self.report_progress(force=False)
        with self._progress_lock:
            if not self._progress:
                return
            self._progress.update(state=state, updated=time.time())
            self._write_progress(dict(self._progress))

    def _write_progress(self, data: dict[str, Any]) -> None:
        path = self.progress_path
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:  # a full or flaky disk must not kill a day of synthesis
            _log.warning("could not write %s: %s", path, e)
            tmp.unlink(missing_ok=True)

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
