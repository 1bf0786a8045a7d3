"""The Slurm executor on the real local cluster (`slurm/local-cluster.sh up`): arrays,
dependencies, a forced failure recovered by one resubmit, array splitting, services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from support.slurm_faults import FlakyTool
from support.slurm_helpers import (
    job_ids,
    make_executor,
    require_cluster,
    sacct_states,
    wait_jobs,
    write_profile,
)

from skymath.errors import UserError
from skymath.pipeline import runner
from skymath.records import read_records

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]


@pytest.fixture(autouse=True)
def _cluster():
    require_cluster()


FAIL_CFG = """
run: {name: fail6, root: "@ROOT@"}
stages:
  emit:
    kind: support.stage_emit
    num_shards: 6
    shape: cpu-array
    resources: {mem_gb: 0.5, time: "00:10:00"}
    params: {records_per_shard: 3, fail_shards: [2]}
  collect:
    kind: support.stage_collect
    depends_on: [emit]
    num_shards: 2
    resources: {mem_gb: 0.5, time: "00:10:00"}
"""


def test_failed_shard_is_resubmitted_alone_and_dependents_rechained(tmp_path):
    run, cfg, ex = make_executor(tmp_path, FAIL_CFG)
    assert ex.launch() == 0
    first = job_ids(run, reason="launch")
    assert len(first) == 2
    emit_job, collect_job = first
    sub = {e["stage"]: e for e in run.ledger() if e.get("event") == "submit"}
    assert sub["emit"]["array"] == "0-5" and sub["emit"]["shards"] == list(range(6))
    assert sub["collect"]["dependency"] == f"afterok:{emit_job}"
    assert "--kill-on-invalid-dep=yes" in sub["collect"]["sbatch"]
    wait_jobs(first)

    st = {s.name: s for s in runner.status(run, cfg)}
    assert st["emit"].indices("failed") == [2]
    assert st["emit"].indices("done") == [0, 1, 3, 4, 5]
    failed = st["emit"].shards[2]
    assert failed.job_id == f"{emit_job}_2"
    assert failed.log == str(run.root.resolve() / "logs" / "emit" / f"{emit_job}_2.out")
    assert "injected failure in shard 2" in open(failed.log).read()
    # the dependent was cancelled by Slurm (kill-on-invalid-dep), not left pending and not failed
    assert st["collect"].count("pending") == 0 and st["collect"].count("failed") == 0
    assert all(s.state == "missing" and "cancelled" in (s.error or "") for s in st["collect"].shards)
    states = sacct_states(first, keys=[f"{emit_job}_{i}" for i in range(6)])
    assert states[f"{emit_job}_2"] == "FAILED"
    assert states[f"{emit_job}_0"] == "COMPLETED"
    assert all(v == "CANCELLED" for k, v in states.items() if k.startswith(f"{collect_job}_"))

    assert ex.resubmit() == 0
    again = job_ids(run, reason="resubmit")
    assert len(again) == 2
    sub2 = {e["stage"]: e for e in run.ledger() if e.get("reason") == "resubmit" and e.get("event") == "submit"}
    assert sub2["emit"]["shards"] == [2] and sub2["emit"]["array"] == "2"
    assert sub2["collect"]["dependency"] == f"afterok:{again[0]}"
    assert open(sub2["emit"]["shard_file"]).read().split() == ["0", "1", "2"]  # line = task id
    wait_jobs(again)
    states = sacct_states([again[0]], keys=[f"{again[0]}_2"])
    assert list(states) == [f"{again[0]}_2"] and states[f"{again[0]}_2"] == "COMPLETED"

    st = runner.status(run, cfg)
    assert all(s.complete for s in st)
    recs = list(read_records(run.output_files("collect", 2)))
    counts = Counter(r.id for r in recs)
    assert sorted(counts) == sorted(f"emit-{i}-{j}" for i in range(6) for j in range(3))
    assert set(counts.values()) == {1}
    marker = json.loads(run.done_path("emit", 2).read_text())
    assert marker["attempt"] == 2 and marker["SLURM_ARRAY_JOB_ID"] == again[0]
    # nothing left to do: a second resubmit submits nothing
    n = len(run.ledger())
    assert ex.resubmit() == 0
    assert not [e for e in run.ledger()[n:] if e.get("event") == "submit"]


SPLIT_CFG = """
run: {name: split10, root: "@ROOT@"}
stages:
  emit:
    kind: support.stage_emit
    num_shards: 10
    shape: cpu-array
    resources: {mem_gb: 0.25, time: "00:10:00"}
    params: {records_per_shard: 1}
  collect:
    kind: support.stage_collect
    depends_on: [emit]
    resources: {mem_gb: 0.25, time: "00:10:00"}
"""


def test_array_larger_than_max_array_size_is_split_and_dependents_wait_for_all(tmp_path):
    run, cfg, ex = make_executor(tmp_path, SPLIT_CFG, write_profile(tmp_path, max_array_size=4))
    ex.launch()
    subs = [e for e in run.ledger() if e.get("event") == "submit"]
    emit = [e for e in subs if e["stage"] == "emit"]
    assert [e["shards"] for e in emit] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [e["array"] for e in emit] == ["0-3", "0-3", "0-1"]  # every task id < MaxArraySize
    collect = [e for e in subs if e["stage"] == "collect"]
    assert len(collect) == 1
    assert collect[0]["dependency"] == "afterok:" + ":".join(e["job_id"] for e in emit)
    wait_jobs([e["job_id"] for e in subs])
    assert all(s.complete for s in runner.status(run, cfg))
    assert sorted(r.id for r in read_records(run.output_files("collect", 1))) == sorted(
        f"emit-{i}-0" for i in range(10))
    states = sacct_states([e["job_id"] for e in emit], expect=10, keys=[f"{e['job_id']}_0" for e in emit])
    assert len(states) == 10 and set(states.values()) == {"COMPLETED"}


SERVICE_CFG = """
run: {name: svc, root: "@ROOT@"}
stages:
  prep:
    kind: support.stage_emit
    shape: cpu-array
    resources: {mem_gb: 0.25, time: "00:10:00"}
    params: {records_per_shard: 20, delay_s: 0.5}
  server:
    kind: support.slurm_service
    resources: {mem_gb: 0.25, time: "00:10:00"}
  use:
    kind: support.slurm_consumer
    depends_on: [prep]
    services: [server]
    num_shards: 2
    resources: {mem_gb: 0.25, time: "00:10:00", partition: "@PART@"}
"""


def test_service_waits_for_its_consumers_parents_and_is_stopped_after_them(tmp_path):
    run, cfg, ex = make_executor(tmp_path, SERVICE_CFG.replace("@PART@", "cpu"))
    ex.launch()
    subs = [e for e in run.ledger() if e.get("event") == "submit"]
    assert [(e["stage"], e["role"]) for e in subs] == [("prep", "stage"), ("server", "service"), ("use", "stage"),
                                                       ("server", "stop-service")]
    prep, svc, use, stop = subs
    assert svc["dependency"] == f"afterok:{prep['job_id']}"  # no GPU server idling while prep runs
    assert use["dependency"] == f"afterok:{prep['job_id']},after:{svc['job_id']}"
    assert stop["dependency"] == f"afterany:{use['job_id']}"
    seen = ""
    deadline = time.monotonic() + 60
    while not run.is_done("prep", 0) and time.monotonic() < deadline and seen != "PENDING Dependency":
        seen = subprocess.run(["squeue", "-h", "-j", svc["job_id"], "-o", "%T %r"], capture_output=True,
                              text=True).stdout.strip()
        time.sleep(0.3)
    assert seen == "PENDING Dependency", seen  # held back while its consumer's parent ran
    wait_jobs([e["job_id"] for e in subs])
    assert run.stage_complete("use", 2)
    assert (run.service_dir("server") / "STOP").exists()
    assert (run.service_dir("server") / "stopped-0").read_text() == "STOP file"
    assert not run.is_done("server", 0)  # services never get .done markers
    states = sacct_states([svc["job_id"], stop["job_id"]], keys=[f"{svc['job_id']}_0"])
    assert states[f"{svc['job_id']}_0"] == "COMPLETED"


def test_a_launch_that_fails_half_way_cancels_what_it_queued(tmp_path):
    """sbatch refuses the consumer (no such partition) after prep and the service were queued:
    the launch cancels both (no service left running for consumers that never come)."""
    run, cfg, ex = make_executor(tmp_path, SERVICE_CFG.replace("@PART@", "no-such-partition"))
    with pytest.raises(UserError, match=r"sbatch for stage use \(stage\) failed: .*cancelled the 2 job\(s\)"):
        ex.launch()
    subs = [e for e in run.ledger() if e.get("event") == "submit"]
    assert [(e["stage"], e["role"]) for e in subs] == [("prep", "stage"), ("server", "service")]
    ids = [e["job_id"] for e in subs]
    (cancel,) = [e for e in run.ledger() if e.get("event") == "cancel"]
    assert sorted(cancel["job_ids"]) == sorted(ids) and cancel["ok"]
    wait_jobs(ids, timeout_s=60)
    states = sacct_states(ids, expect=len(ids))
    assert len(states) == 2 and set(states.values()) == {"CANCELLED"}, states


SLOW_CFG = """
run: {name: slow, root: "@ROOT@"}
stages:
  slow:
    kind: support.stage_emit
    num_shards: 2
    shape: cpu-array
    resources: {mem_gb: 0.25, time: "00:10:00"}
    params: {records_per_shard: 400, delay_s: 0.5}
  after:
    kind: support.stage_collect
    depends_on: [slow]
    resources: {mem_gb: 0.25, time: "00:10:00"}
"""


def _states(run, cfg) -> dict[str, list[str]]:
    return {s.name: [sh.state for sh in s.shards] for s in runner.status(run, cfg)}


def test_status_is_scoped_retried_and_unknown_never_missing_then_cancel(tmp_path, monkeypatch):
    """squeue/sacct name this run's job ids (-j), a transient squeue failure is retried, an outage
    makes queued shards "unknown" (not "missing") and does not end --wait; then `skymath cancel`
    cancels exactly this run's jobs (one stage, then the rest) and records it."""
    run, cfg, ex = make_executor(tmp_path, SLOW_CFG)
    ex.launch()
    ids = job_ids(run)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and _states(run, cfg)["slow"] != ["running", "running"]:
        time.sleep(0.5)
    assert _states(run, cfg) == {"slow": ["running", "running"], "after": ["pending"]}

    squeue = FlakyTool(tmp_path / "bin", "squeue")
    real_path = os.environ["PATH"]
    monkeypatch.setenv("PATH", squeue.path())
    monkeypatch.setenv("SKYMATH_SLURM_RETRY_S", "0.05")
    squeue.fail(2)  # two timeouts, then an answer
    assert _states(run, cfg) == {"slow": ["running", "running"], "after": ["pending"]}
    calls = squeue.calls()
    assert len(calls) == 3 and all(c[c.index("-j") + 1] == ",".join(sorted(ids, key=int)) for c in calls), calls

    squeue.fail("always")  # the scheduler does not answer at all
    st = {s.name: s for s in runner.status(run, cfg)}
    assert [sh.state for sh in st["slow"].shards] == ["unknown", "unknown"]
    assert st["after"].shards[0].state == "unknown" and "did not answer" in st["after"].shards[0].error
    with pytest.raises(UserError, match="still running"):  # a failed poll never ends the wait
        runner.wait(run, cfg, poll_s=0.2, timeout_s=1.0)
    assert all("-j" in c for c in squeue.calls())  # never the whole cluster's queue
    monkeypatch.setenv("PATH", real_path)

    r = _cancel(run.root, "--stage", "after")
    assert r.returncode == 0 and ids[1] in r.stdout and ids[0] not in r.stdout, r.stdout + r.stderr
    r = _cancel(run.root)
    assert r.returncode == 0 and ids[0] in r.stdout, r.stdout + r.stderr
    wait_jobs(ids, timeout_s=120)
    cancels = [e for e in run.ledger() if e.get("event") == "cancel"]
    assert [c["job_ids"] for c in cancels] == [[ids[1]], [ids[0]]] and all(c["ok"] for c in cancels)
    states = sacct_states(ids, keys=[f"{ids[0]}_0", f"{ids[0]}_1"])
    assert states[f"{ids[0]}_0"] == states[f"{ids[0]}_1"] == "CANCELLED", states
    st = {s.name: s for s in runner.status(run, cfg)}
    assert [sh.state for sh in st["slow"].shards] == ["missing", "missing"]
    assert "cancelled by skymath cancel" in st["slow"].shards[0].error
    r = _cancel(run.root)
    assert r.returncode == 0 and "nothing to cancel" in r.stdout


def _cancel(run_root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skymath", "cancel", str(run_root), *args], capture_output=True,
                          text=True, timeout=300)


def test_local_cluster_up_again_is_a_no_op_that_keeps_queued_jobs(tmp_path):
    """`up` on a running cluster with an unchanged configuration succeeds and keeps the queue (it
    once ended with exit 1 and no message there: `set -e` and a function's last `cmp`)."""
    if os.geteuid() != 0:
        pytest.fail("slurm/local-cluster.sh runs as root (as .ci/run does)")
    held = subprocess.run(["sbatch", "--parsable", "--hold", "--job-name=skymath-up-noop", "--time=1",
                           f"--output={tmp_path}/%j.out", "--wrap=true"], capture_output=True, text=True, check=True)
    job = held.stdout.strip().split(";")[0]
    try:
        script = os.path.join(os.path.dirname(__file__), "..", "slurm", "local-cluster.sh")
        r = subprocess.run(["bash", script, "up"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "error" not in r.stderr and "up: cluster" in r.stderr
        assert "stopping slurmctld" not in r.stderr  # nothing changed: nothing restarted
        q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, check=True)
        assert q.stdout.strip() == "PENDING"
    finally:
        subprocess.run(["scancel", job], check=False)
