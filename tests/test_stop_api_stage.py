"""A cooperative API stage (distractor insertion, which polls its stop flag between batches) told
to stop while its requests hang: it must end within the client's grace — not after timeout x
retries — exit 143 for the requeue, write no verdict for the cut-off requests, and resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from support.eval_distractor_llm import distractor_responder
from support.fault_server import FaultServer
from support.hygiene_run import make_run, run_shard

from skymath.records import read_records


def test_distractors_stopped_mid_request_exit_143_then_resume(tmp_path):
    arrived = threading.Event()

    def note(n: int, body: dict) -> None:
        arrived.set()

    with FaultServer(responder=distractor_responder, latency_s=120.0, on_request=note) as srv:
        llm = {"model": "gpt-4o-mini", "endpoints": [{"base_url": srv.base_url}], "timeout_s": 300,
               "max_retries": 5, "api_key_env": "SKYMATH_TEST_UNSET_KEY"}
        run = make_run(tmp_path, {"distract": {"kind": "distractors", "params": {
            "limit": 2, "counts": [1, 2], "sample": "first", "verify": "rule"}}}, {"llm": llm})
        log = tmp_path / "worker.log"
        cmd = [sys.executable, "-m", "skymath.worker", str(run.root), "distract", "0"]
        with open(log, "wb") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            assert arrived.wait(240)
            p.send_signal(signal.SIGTERM)
            # the client's grace is 20 s; a request that hangs 120 s x 6 attempts must not be awaited
            assert p.wait(100) == 143, log.read_text()[-3000:]
        assert not run.is_done("distract", 0)
        assert "stopped by" in run.read_marker(run.failed_path("distract", 0))["error"]
        srv.latency_s = 0.0
        assert run_shard(run, "distract", 0) == 0
    variants = sorted((r.parent_id, r.meta["distractors"]) for r in read_records(run.output_files("distract", 1)))
    assert len(variants) == 4 and len(set(variants)) == 4
