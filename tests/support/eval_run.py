"""Helpers for the evaluation tests: build a run directory from a config dict and run its shards
in-process through the real worker entry point (`skymath.worker.run_shard`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skymath.config import config_from_dict, dump_config
from skymath.pipeline.rundir import RunDir


def make_run(tmp: Path, name: str, stages: dict[str, Any], llm: dict[str, Any] | None = None) -> RunDir:
    data: dict[str, Any] = {"run": {"name": name, "root": str(tmp)}, "stages": stages}
    if llm:
        data["llm"] = llm
    cfg = config_from_dict(data, f"<{name}>")
    run = RunDir(Path(tmp) / name)
    run.freeze_config(dump_config(cfg))
    return run


def run_stage(run: RunDir, stage: str) -> None:
    """Every shard of a stage, in order; fails loudly with the shard's error."""
    from skymath.worker import run_shard

    cfg = run.load_config()
    for shard in range(cfg.stages[stage].num_shards):
        rc = run_shard(run.root, stage, shard)
        if rc != 0:
            marker = run.read_marker(run.failed_path(stage, shard)) or {}
            raise AssertionError(f"{stage}[{shard}] exited {rc}: {marker.get('error')}\n{marker.get('traceback', '')}")


def eval_stage(model: str = "tiny:smollm2", gsm8k: int = 2, math: int = 2, max_new_tokens: int = 32,
               batch_size: int = 4, num_shards: int = 1, **params: Any) -> dict[str, Any]:
    return {
        "kind": "eval", "num_shards": num_shards,
        "params": {"model": model, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                   "benchmarks": [{"name": "gsm8k", "limit": gsm8k}, {"name": "math", "limit": math}], **params},
    }
