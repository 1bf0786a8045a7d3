"""The worker's stop protocol: a shard whose step finishes all its work inside the signal lead is
done (exit 0: the Slurm trap ends the job without a requeue), one that returns early is stopped
(exit 143: requeued, partial output kept for the resume)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from skymath.config import config_from_dict, dump_config
from skymath.pipeline.rundir import RunDir


@pytest.mark.parametrize("finish_anyway, rc", [(True, 0), (False, 143)])
def test_usr2_then_finished_is_done_and_returned_early_is_stopped(tmp_path, finish_anyway, rc):
    cfg = config_from_dict({"run": {"name": "w", "root": str(tmp_path / "runs")}, "stages": {
        "s": {"kind": "support.stage_finish_in_lead", "params": {"finish_anyway": finish_anyway}}}})
    run = RunDir(cfg.run_dir)
    run.freeze_config(dump_config(cfg))
    p = subprocess.Popen([sys.executable, "-m", "skymath.worker", str(run.root), "s", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = run.work_dir("s", 0) / "started"
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGUSR2)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == rc, out
    assert run.is_done("s", 0) is finish_anyway
    if finish_anyway:
        marker = run.read_marker(run.done_path("s", 0))
        assert marker["records"] == 2 and "complete" not in marker
    else:
        assert "stopped by" in run.read_marker(run.failed_path("s", 0))["error"]
