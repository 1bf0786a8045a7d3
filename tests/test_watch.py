"""Progress files of running shards and the run-wide view built from them (`status --watch`)."""

from __future__ import annotations

import json
import os

import pytest

from skymath.config import config_from_dict
from skymath.pipeline import RunDir
from skymath.pipeline import context as context_mod
from skymath.pipeline.context import ShardContext

EMIT = "support.stage_emit"


def _ctx(tmp_path, stage: str = "gen", shard: int = 1) -> ShardContext:
    cfg = config_from_dict({"run": {"name": "w", "root": str(tmp_path)},
                            "stages": {stage: {"kind": EMIT, "num_shards": 2}}})
    return ShardContext(run=RunDir(tmp_path / "w"), config=cfg, stage_name=stage, shard=shard)


def test_report_progress_is_throttled_atomic_and_cumulative(tmp_path, monkeypatch):
    monkeypatch.setattr(context_mod, "PROGRESS_INTERVAL_S", 3600.0)
    ctx = _ctx(tmp_path)
    path = ctx.run.progress_path("gen", 1)
    assert path.name == "shard-00001.progress.json"
    ctx.report_progress(force=True)
    first = json.loads(path.read_text())
    assert first["pid"] == os.getpid() and first["state"] == "running" and first["shard"] == 1
    assert first["host"] and first["updated"] >= first["started"]
    # within the interval: remembered, not written
    ctx.report_progress(records=7, usage={"requests": 9, "prompt_tokens": 100, "completion_tokens": 40,
                                          "cost_usd": 0.25}, failed=1)
    assert "records" not in json.loads(path.read_text())
    # `None` keeps earlier values; a forced write carries everything
    ctx.report_progress(records=8, force=True)
    p = json.loads(path.read_text())
    assert (p["records"], p["requests"], p["tokens_in"], p["tokens_out"], p["cost_usd"], p["failed"]) == \
        (8, 9, 100, 40, 0.25, 1)
    assert p["records_start"] == 7  # what this attempt started from: rates count only new records
    assert not [f for f in path.parent.iterdir() if ".tmp" in f.name]  # no temp file left
    ctx.finish_progress("ended")
    assert json.loads(path.read_text())["state"] == "ended"


def test_progress_bar_and_writers_feed_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(context_mod, "PROGRESS_INTERVAL_S", 0.0)
    ctx = _ctx(tmp_path, shard=0)
    w = ctx.writer()
    bar = ctx.progress(total=4, desc="t")
    for j in range(3):
        w.write({"id": f"r{j}", "problem": "p"})
        bar.update(1)
    bar.close()
    p = json.loads(ctx.run.progress_path("gen", 0).read_text())
    assert (p["done"], p["total"], p["records"]) == (3, 4, 3)


def test_progress_write_failure_never_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(context_mod, "PROGRESS_INTERVAL_S", 0.0)
    ctx = _ctx(tmp_path)
    ctx.stage_dir.mkdir(parents=True)
    ctx.run.progress_path("gen", 1).mkdir()  # a directory where the file should go: os.replace fails
    ctx.report_progress(records=1, force=True)  # logged, not raised
    assert not [f for f in ctx.stage_dir.iterdir() if ".tmp" in f.name]


@pytest.mark.parametrize("rank", ["1"])
def test_only_rank_zero_writes_progress(tmp_path, monkeypatch, rank):
    monkeypatch.setenv("RANK", rank)
    ctx = _ctx(tmp_path)
    ctx.report_progress(records=1, force=True)
    assert not ctx.run.progress_path("gen", 1).exists()
