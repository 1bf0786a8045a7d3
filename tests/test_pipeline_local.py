"""The DAG and the local executor, through the real worker subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import write_config

from skymath.config import config_from_dict
from skymath.errors import UserError
from skymath.executors.local import LocalExecutor
from skymath.pipeline import Pipeline, RunDir
from skymath.pipeline.runner import prepare_run
from skymath.pipeline.status import collect_status
from skymath.records import read_records

EMIT = "support.stage_emit"
COLLECT = "support.stage_collect"


def _cfg(tmp_path, stages: dict, name: str = "t") -> str:
    import yaml

    data = {"run": {"name": name, "root": str(tmp_path / "runs")}, "executor": {"max_parallel": 2, "poll_s": 0.1},
            "stages": stages}
    return str(write_config(tmp_path, yaml.safe_dump(data), f"{name}.yaml"))


def _run(cfg_path: str) -> tuple[int, RunDir]:
    run, cfg = prepare_run(cfg_path)
    rc = LocalExecutor(run, cfg, quiet=True).launch()
    return rc, run


def test_dag_order_and_cycles():
    cfg = config_from_dict({"stages": {
        "d": {"kind": COLLECT, "depends_on": ["b", "c"]},
        "b": {"kind": COLLECT, "depends_on": ["a"]},
        "c": {"kind": COLLECT, "depends_on": ["a"]},
        "a": {"kind": EMIT},
    }})
    p = Pipeline.from_config(cfg)
    assert p.order.index("a") < p.order.index("b") < p.order.index("d")
    assert p.order.index("c") < p.order.index("d")
    assert p.descendants("b") == ["d"]
    assert set(p.descendants("a")) == {"b", "c", "d"}
    with pytest.raises(UserError, match="dependency cycle"):
        config_from_dict({"stages": {"x": {"kind": COLLECT, "depends_on": ["y"]},
                                     "y": {"kind": COLLECT, "depends_on": ["x"]}}})


def test_failed_shard_blocks_dependents_then_resubmit_completes(tmp_path):
    path = _cfg(tmp_path, {
        "gen": {"kind": EMIT, "num_shards": 4, "params": {"records_per_shard": 3, "fail_shards": [2]}},
        "after": {"kind": COLLECT, "depends_on": ["gen"]},
        "last": {"kind": COLLECT, "depends_on": ["after"]},
    })
    rc, run = _run(path)
    assert rc == 1
    cfg = run.load_config()
    st = {s.name: s for s in collect_status(run, cfg)}
    assert st["gen"].indices("done") == [0, 1, 3]
    assert st["gen"].indices("failed") == [2]
    assert "injected failure in shard 2" in st["gen"].shards[2].error
    assert st["after"].count("done") == 0 and not run.stage_dir("after").exists()  # never started
    # resubmit: only shard 2 runs again, then the dependents
    done_before = {i: run.done_path("gen", i).stat().st_mtime_ns for i in (0, 1, 3)}
    r = subprocess.run([sys.executable, "-m", "skymath", "resubmit", str(run.root)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {i: run.done_path("gen", i).stat().st_mtime_ns for i in (0, 1, 3)} == done_before
    ids = [rec.id for rec in read_records(run.output_files("last", 1))]
    assert sorted(ids) == sorted(f"gen-{s}-{j}" for s in range(4) for j in range(3))
    assert len(ids) == len(set(ids))
    # shard 2's records come from its second attempt (the first one failed after writing)
    attempts = {rec.id: rec.meta["attempt"] for rec in read_records(run.output_files("gen", 4))}
    assert {attempts[f"gen-2-{j}"] for j in range(3)} == {1}  # resumed: kept the records already written
    assert json.loads(run.done_path("gen", 2).read_text())["attempt"] == 2


def test_sigkill_mid_shard_leaves_no_done_and_rerun_is_exact(tmp_path):
    path = _cfg(tmp_path, {"gen": {"kind": EMIT, "num_shards": 2,
                                   "params": {"records_per_shard": 6, "kill_self_after": 3}}})
    rc, run = _run(path)
    assert rc == 1
    for i in range(2):
        assert not run.is_done("gen", i)
        assert not run.shard_path("gen", i).exists()  # only the .partial exists
        assert run.shard_path("gen", i, ".jsonl.partial").exists()
    rc, run = _run(path)
    assert rc == 0
    ids = Counter(r.id for r in read_records(run.output_files("gen", 2)))
    assert set(ids) == {f"gen-{s}-{j}" for s in range(2) for j in range(6)}
    assert max(ids.values()) == 1
    # rerunning a complete run does nothing
    marker = run.done_path("gen", 0).read_text()
    rc, run = _run(path)
    assert rc == 0 and run.done_path("gen", 0).read_text() == marker


def test_sigterm_stops_cleanly_and_rerun_resumes(tmp_path):
    path = _cfg(tmp_path, {"gen": {"kind": EMIT, "num_shards": 2,
                                   "params": {"records_per_shard": 40, "delay_s": 0.1}},
                           "after": {"kind": COLLECT, "depends_on": ["gen"]}})
    proc = subprocess.Popen([sys.executable, "-m", "skymath", "run", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run = RunDir(tmp_path / "runs" / "t")
    deadline = time.time() + 60
    while time.time() < deadline:
        parts = list(run.stage_dir("gen").glob("*.partial")) if run.stage_dir("gen").exists() else []
        if parts and all(p.stat().st_size > 200 for p in parts) and len(parts) == 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "stopping" in out
    assert not any(run.is_done("gen", i) for i in range(2))
    assert not run.stage_dir("after").exists()
    r = subprocess.run([sys.executable, "-m", "skymath", "run", path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [rec.id for rec in read_records(run.output_files("after", 1))]
    assert len(ids) == 80 and len(set(ids)) == 80


def test_corrupt_input_line_is_quarantined_and_stage_completes(tmp_path):
    path = _cfg(tmp_path, {"gen": {"kind": EMIT, "num_shards": 1, "params": {"records_per_shard": 4}},
                           "after": {"kind": COLLECT, "depends_on": ["gen"]}})
    run, cfg = prepare_run(path)
    assert LocalExecutor(run, cfg, quiet=True).launch(["gen"]) == 0
    shard = run.shard_path("gen", 0)
    lines = shard.read_text().splitlines()
    lines.insert(2, '{"id": "broken", "problem": ')
    shard.write_text("\n".join(lines) + "\n")
    assert LocalExecutor(run, cfg, quiet=True).launch() == 0
    assert len(list(read_records(run.output_files("after", 1)))) == 4
    bad = [json.loads(ln) for ln in run.stage_dir("gen").joinpath("shard-00000.bad.jsonl").read_text().splitlines()]
    assert len(bad) == 1 and bad[0]["line"] == 3 and "invalid JSON" in bad[0]["reason"]


def test_frozen_config_mismatch_is_refused(tmp_path):
    path = _cfg(tmp_path, {"gen": {"kind": EMIT}})
    prepare_run(path)
    with pytest.raises(UserError, match="different config"):
        prepare_run(path, ["stages.gen.num_shards=3"])
    run, cfg = prepare_run(path, ["stages.gen.num_shards=3"], reconfigure=True)
    assert cfg.stages["gen"].num_shards == 3
