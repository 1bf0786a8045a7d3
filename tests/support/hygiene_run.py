"""Helpers for the hygiene tests: a run directory with hand-made input shards, and one shard of a
stage run in-process through the real worker (signal handlers restored afterwards)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from skymath.config import config_from_dict, dump_config
from skymath.pipeline.rundir import RunDir
from skymath.records import Record, write_jsonl


def make_run(tmp_path: Path, stages: dict[str, Any], extra: dict[str, Any] | None = None) -> RunDir:
    data = {"run": {"name": "hyg", "root": str(tmp_path / "runs")}, "stages": stages, **(extra or {})}
    cfg = config_from_dict(data)
    run = RunDir(cfg.run_dir)
    run.freeze_config(dump_config(cfg))
    return run


def put_records(run: RunDir, stage: str, shard: int, records: list[Record]) -> None:
    """Write a finished input shard (output + `.done`) as if the stage had run."""
    write_jsonl(run.shard_path(stage, shard), records)
    run.mark_done(stage, shard, {"records": len(records)})


def run_shard(run: RunDir, stage: str, shard: int = 0) -> int:
    from skymath.worker import run_shard as _run

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)}
    try:
        return _run(run.root, stage, shard)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


SOURCE = {"kind": "support.stage_emit", "num_shards": 1}  # a stand-in input stage, filled by put_records
