"""Progress files of running shards and the run-wide view built from them (`status --watch`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


# ---- the run-wide view: numbers from markers + progress files -------------------------------------------
def _write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_status_sums_markers_and_progress_files_into_rates_and_eta(tmp_path):
    import time

    from skymath.pipeline.procs import process_start, this_host
    from skymath.pipeline.status import collect_status

    ctx = _ctx(tmp_path)
    cfg = ctx.config.model_copy(deep=True)
    cfg.stages["gen"].num_shards = 4
    run = ctx.run
    now = time.time()
    # shard 0 done (marker usage), shard 1 running here (live pid), 2 left by a dead worker, 3 failed
    _write(run.done_path("gen", 0), {"records": 10, "seconds": 100.0,
                                     "usage": {"requests": 20, "prompt_tokens": 1000, "completion_tokens": 500,
                                               "cost_usd": 0.5}})
    _write(run.progress_path("gen", 1), {"pid": os.getpid(), "host": this_host(), "pid_start": process_start(os.getpid()),
                                         "state": "running", "started": now - 50, "updated": now - 1,
                                         "records": 9, "records_start": 4, "requests": 10, "tokens_in": 400,
                                         "tokens_out": 100, "cost_usd": 0.25, "failed": 1,
                                         "done": 30, "done_start": 10, "total": 40})
    _write(run.progress_path("gen", 2), {"pid": os.getpid(), "host": this_host(), "pid_start": 1,
                                         "state": "running", "started": now - 500, "updated": now - 400,
                                         "records": 3, "done": 5, "total": 40})  # pid reused: not running
    _write(run.failed_path("gen", 3), {"error": "boom", "failed_at": now - 10})
    log = run.log_dir("gen") / "shard-00003.log"
    log.parent.mkdir(parents=True)
    log.write_text("boom\n")
    (st,) = collect_status(run, cfg, now=now)
    assert [s.state for s in st.shards] == ["done", "running", "missing", "failed"]
    assert st.shards[3].log == str(log) and st.shards[3].error == "boom"
    s = st.stats
    assert (s.records, s.requests, s.tokens_in, s.tokens_out) == (22, 30, 1400, 600)
    assert s.cost_usd == pytest.approx(0.75) and s.failed_units == 1
    assert s.records_per_s == pytest.approx(5 / 50, rel=1e-3)  # new records of this attempt / its age
    # done shards count 1, the running one 30/40: fraction (1 + 0.75) / 4; pace (20/40)/50 s per shard
    assert s.fraction == pytest.approx(1.75 / 4)
    assert s.eta_s == pytest.approx((1 - 1.75 / 4) * 4 / (0.5 / 50), rel=1e-3)
    # a local executor that is alive makes the dead worker's shard pending and the old failure pending too
    _write(run.root / "local-executor.json", {"pid": os.getpid(), "host": this_host(),
                                              "pid_start": process_start(os.getpid()), "started": now - 30,
                                              "stages": {"gen": "running"}})
    (st,) = collect_status(run, cfg, now=now)
    assert [s.state for s in st.shards] == ["done", "running", "pending", "failed"]  # failed after it started
    _write(run.failed_path("gen", 3), {"error": "boom", "failed_at": now - 60})  # an older attempt's failure
    (st,) = collect_status(run, cfg, now=now)
    assert st.shards[3].state == "pending"


def test_watch_waits_through_an_unknown_scheduler_answer(tmp_path, monkeypatch):
    """A poll the scheduler did not answer shows `unknown` and never ends the wait."""
    import io

    from skymath.pipeline import runner
    from skymath.pipeline.status import ShardState, StageStatus
    from skymath.pipeline.watch import watch

    answers = iter(["unknown", "unknown", "running", "done"])
    calls = []

    def fake_status(run, cfg, cache=None):
        state = next(answers)
        calls.append(state)
        st = StageStatus("gen", "support.stage_emit", "cpu-array", 1)
        st.shards = [ShardState(0, state, error="scheduler did not answer: squeue exit 1" if state == "unknown" else None)]
        return [st]

    monkeypatch.setattr(runner, "status", fake_status)
    out = io.StringIO()
    ctx = _ctx(tmp_path)
    final = watch(ctx.run, ctx.config, view="plain", interval=0.01, stream=out)
    assert calls == ["unknown", "unknown", "running", "done"]
    assert final[0].complete
    text = out.getvalue()
    assert "1 unknown (scheduler did not answer)" in text and "1/1 done" in text
    assert len([ln for ln in text.splitlines() if "gen:" in ln]) == 3  # one line per change, not per poll


def _cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skymath", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_watch_a_running_local_run(tmp_path):
    """`status` from another terminal while the local executor runs: running shards are running
    (not missing), queued ones pending, records grow; `status --watch` ends when the run does."""
    import time

    import yaml

    cfg = tmp_path / "slow.yaml"
    cfg.write_text(yaml.safe_dump({
        "run": {"name": "slow", "root": str(tmp_path / "runs")},
        "executor": {"max_parallel": 1, "poll_s": 0.2},
        "stages": {"gen": {"kind": EMIT, "num_shards": 3, "params": {"records_per_shard": 8, "delay_s": 0.4}},
                   "after": {"kind": "support.stage_collect", "depends_on": ["gen"]}}}))
    env = {**os.environ, "SKYMATH_PROGRESS_INTERVAL_S": "0.3"}
    proc = subprocess.Popen([sys.executable, "-m", "skymath", "run", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen: dict | None = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            r = _cli("status", str(tmp_path / "runs" / "slow"), "--json", env=env)
            if r.returncode in (0, 1) and r.stdout.strip():
                gen = json.loads(r.stdout)[0]
                states = [s["state"] for s in gen["shards"]]
                live = [s for s in gen["shards"] if s["state"] == "running" and (s["records"] or 0) > 0]
                if live and "pending" in states:
                    seen = gen
                    break
            time.sleep(0.5)
        assert seen is not None, "never saw a running and a pending shard"
        assert "missing" not in [s["state"] for s in seen["shards"]]
        running = next(s for s in seen["shards"] if s["state"] == "running")
        assert running["records"] > 0 and running["log"].endswith(".log")
        w = _cli("status", str(tmp_path / "runs" / "slow"), "--watch", "--interval", "0.5", env=env)
        assert w.returncode == 0, w.stdout + w.stderr  # ended because the run ended, complete
        lines = w.stdout.splitlines()
        assert any("gen: 3/3 done" in ln and "24 records" in ln and "complete" in ln for ln in lines), lines
        assert any("after: 1/1 done" in ln for ln in lines), lines
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "runs" / "slow" / "local-executor.json").exists()


SLURM_CFG = """
run: {name: watched, root: "@ROOT@"}
stages:
  gen:
    kind: support.stage_emit
    num_shards: 3
    shape: cpu-array
    resources: {mem_gb: 0.25, time: "00:10:00"}
    params: {records_per_shard: 6, delay_s: 1.0}
  after:
    kind: support.stage_collect
    depends_on: [gen]
    resources: {mem_gb: 0.25, time: "00:10:00"}
"""


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_watch_a_slurm_run_with_one_scoped_squeue_per_refresh(tmp_path, monkeypatch):
    import time

    from support.slurm_helpers import make_executor, require_cluster

    from skymath.executors import slurm_queue
    from skymath.pipeline import runner

    require_cluster()
    run, cfg, ex = make_executor(tmp_path, SLURM_CFG)
    assert ex.launch() == 0
    calls: list[list[str]] = []
    real = slurm_queue.run_cmd

    def counting(argv, *a, **kw):
        calls.append(list(argv))
        return real(argv, *a, **kw)

    monkeypatch.setattr(slurm_queue, "run_cmd", counting)
    seen = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        calls.clear()
        st = {s.name: s for s in runner.status(run, cfg)}
        squeues = [c for c in calls if c[0] == "squeue"]
        assert len(squeues) <= 1 and all("-j" in c for c in squeues), calls  # one scoped squeue per refresh
        if st["gen"].count("running") and st["gen"].stats.records > 0:
            seen = st
            break
        if st["gen"].complete:
            break
        time.sleep(0.5)
    assert seen is not None, "never saw a running Slurm shard with records"
    assert st["after"].count("pending") == 1  # waits on afterok in the queue
    assert all(sh.job_id for sh in seen["gen"].shards if sh.state == "running")
    w = _cli("status", str(run.root), "--watch", "--plain", "--interval", "1", timeout=400)
    assert w.returncode == 0, w.stdout + w.stderr
    assert any("gen: 3/3 done" in ln and "18 records" in ln for ln in w.stdout.splitlines()), w.stdout
    assert any("after: 1/1 done" in ln for ln in w.stdout.splitlines()), w.stdout


def test_a_training_shard_reports_its_steps(tmp_path):
    """The trainer's <work dir>/progress.json (step/max_steps) gives a running sft shard its ETA."""
    import time

    from skymath.pipeline.procs import process_start, this_host
    from skymath.pipeline.status import collect_status

    ctx = _ctx(tmp_path, shard=0)
    now = time.time()
    _write(ctx.run.progress_path("gen", 0), {"pid": os.getpid(), "host": this_host(),
                                             "pid_start": process_start(os.getpid()), "state": "running",
                                             "started": now - 100, "updated": now})
    _write(ctx.run.stage_dir("gen") / "shard-00000" / "progress.json", {"step": 3, "max_steps": 12})
    (st,) = collect_status(ctx.run, ctx.config, now=now)
    assert (st.shards[0].state, st.shards[0].done, st.shards[0].total) == ("running", 3, 12)
    assert st.stats.fraction == pytest.approx(3 / 12 / 2)  # 2 shards, one a quarter done
    assert st.stats.eta_s == pytest.approx((1 - 3 / 24) * 2 / (3 / 12 / 100), rel=1e-3)
