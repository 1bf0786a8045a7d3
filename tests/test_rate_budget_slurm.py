"""The API key's rate budget on the real local Slurm cluster: an array of 8 synth tasks (the
production worker, engine and client) shares one RPM/TPM budget through the run directory and
stays under a rate-limited server's limits. bench/rate_budget.py measures the same on the local
executor with a longer run."""

from __future__ import annotations

import json

import pytest
from support.fault_server import FaultServer
from support.slurm_helpers import job_ids, make_executor, require_cluster, wait_jobs
from support.synth_helpers import real_seeds, synth_responder

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(600)]

SHARDS, RPM, TPM = 8, 600.0, 200_000.0


def test_eight_array_tasks_share_one_rate_budget(tmp_path):
    require_cluster()
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(s) + "\n" for s in real_seeds(24, 24)), encoding="utf-8")
    with FaultServer(responder=synth_responder, rpm=RPM, tpm=TPM, burst_s=1.0, latency_s=0.1) as srv:
        cfg = f"""
run: {{name: ratebudget, root: "@ROOT@"}}
llm: {{model: fault-model, endpoints: [{{base_url: "{srv.base_url}"}}], rpm: {RPM:g}, tpm: {TPM:g},
      concurrency: 4, timeout_s: 30, max_retries: 20, backoff_base_s: 0.2, backoff_max_s: 2.0,
      api_key_env: SKYMATH_TEST_UNSET_KEY, failure_tolerance: 1.0}}
stages:
  seeds: {{kind: support.synth_seeds, params: {{file: "{seeds}"}}}}
  synth:
    kind: synth
    depends_on: [seeds]
    num_shards: {SHARDS}
    resources: {{cpus: 1, mem_gb: 0.5, time: "00:10:00"}}
    params: {{mix: {{metamath: 1, evol: 1, xwin: 1}}, match_gold: false, few_shot: false, max_tokens: 100,
             evol: {{max_steps: 2}}}}
"""
        run, _cfg, ex = make_executor(tmp_path, cfg)
        ex.launch()
        ids = job_ids(run)
        wait_jobs(ids, timeout_s=500)
        st = srv.stats()
        t429 = [e["t"] for e in srv.log if e["action"] == "429-limit"]
        acc = list(srv.accepted_log)
    markers = [run.read_marker(run.done_path("synth", i)) for i in range(SHARDS)]
    assert all(markers), [run.read_marker(run.failed_path("synth", i)) for i in range(SHARDS)]
    assert all(m.get("SLURM_ARRAY_TASK_ID") is not None for m in markers)  # ran as array tasks
    # the tasks really ran side by side (otherwise one budget would be trivial)
    spans = sorted((m["finished_at"] - m["seconds"], m["finished_at"]) for m in markers)
    overlap = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert overlap >= 4, spans
    assert st["accepted"] >= 150
    t0 = acc[0][0]
    late = [round(t - t0, 2) for t in t429]
    assert st["rate_limited"] <= max(1, 0.01 * st["total"]), (st, "429s at (s):", late)  # the server's limiter almost never refused
    window = st["accepted_last"] - st["accepted_first"]
    req_util, tok_util = st["accepted"] / window / (RPM / 60), st["accepted_tokens"] / window / (TPM / 60)
    assert max(req_util, tok_util) <= 1.05  # never above the key's limits (burst allowance aside)
    print(f"slurm rate budget: {st['accepted']} accepted, {st['rate_limited']} 429s of {st['total']}, "
          f"req util {req_util:.3f}, tok util {tok_util:.3f}, {overlap} tasks at once")
