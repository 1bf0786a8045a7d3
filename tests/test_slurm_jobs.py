"""Job shapes on the real local cluster: gpu-multinode (srun -> the one launcher -> torchrun c10d,
2 gloo ranks on CPU) stopped by USR2 and requeued, the USR2 trap at a real time limit (each kind
of step ending), a worker shard stopped and resumed, and the Python launcher on the planner."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import pytest
from support.slurm_helpers import (
    job_ids,
    make_executor,
    release_requeued,
    render_job,
    require_cluster,
    sacct_states,
    sbatch,
    wait_jobs,
)

from skymath.paths import REPO_ROOT
from skymath.pipeline import runner
from skymath.records import read_records

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]


@pytest.fixture(autouse=True)
def _cluster():
    require_cluster()


SIG_CFG = """
run: {name: sig, root: "@ROOT@"}
stages:
  slow:
    kind: support.stage_emit
    shape: cpu-array
    num_shards: 3
    resources: {mem_gb: 0.5, time: "00:10:00"}
    params: {records_per_shard: 30, delay_s: 0.3}
"""


def test_usr2_stops_one_array_task_cleanly_then_requeues_only_it_and_resumes(tmp_path):
    """USR2 to the array task that carries the array's own job id (the last task to start: to
    scontrol that id names the WHOLE array): only that task is requeued and resumes its partial
    output; the other tasks run once."""
    run, cfg, ex = make_executor(tmp_path, SIG_CFG)
    ex.launch()
    (job,) = job_ids(run)
    outs = [run.shard_path("slow", i) for i in range(3)]
    partials = [o.with_name(o.name + ".partial") for o in outs]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not all(p.exists() and len(p.read_text().splitlines()) >= 3
                                                  for p in partials):
        time.sleep(0.3)
    assert all(p.exists() for p in partials) and not any(o.exists() for o in outs), "shards never ran together"
    q = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i %A"], capture_output=True, text=True, timeout=60)
    (task,) = [ln.split()[0].split("_")[1] for ln in q.stdout.splitlines() if ln.split()[1] == job]
    # what Slurm does `signal_lead_s` before the time limit: USR2 to that task's batch shell only
    r = subprocess.run(["scancel", "--batch", "--signal=USR2", f"{job}_{task}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    release_requeued([job], time.monotonic() + 400)  # Slurm would hold the requeued job ~2 min
    wait_jobs([job], timeout_s=400)
    shard = int(task)
    marker = json.loads(run.done_path("slow", shard).read_text())
    assert marker["attempt"] == 2  # second attempt after the requeue, resuming the partial output
    ids = [r.id for r in read_records([outs[shard]])]
    assert sorted(ids) == sorted(f"slow-{shard}-{j}" for j in range(30)) and len(ids) == 30
    attempts = {r.meta["attempt"] for r in read_records([outs[shard]])}
    assert attempts == {1, 2}  # records of the first attempt were kept, not rewritten
    log = open(run.root.resolve() / "logs" / "slow" / f"{job}_{task}.out").read()
    assert "SIGUSR2" in log and f"requeueing job {job}_{task}" in log and "restart 1" in log
    for other in {0, 1, 2} - {shard}:
        assert json.loads(run.done_path("slow", other).read_text())["attempt"] == 1
        olog = open(run.root.resolve() / "logs" / "slow" / f"{job}_{other}.out").read()
        assert "restart 1" not in olog, olog  # never requeued along with the signalled task


def test_python_launcher_submits_through_the_one_planner(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
run: {{name: sub3, root: "{tmp_path / 'runs'}"}}
stages:
  emit:
    kind: support.stage_emit
    num_shards: 3
    shape: cpu-array
    resources: {{mem_gb: 0.25, time: "00:10:00"}}
    params: {{records_per_shard: 2}}
""")
    r = subprocess.run([sys.executable, str(REPO_ROOT / "launch" / "submitit_launch.py"), str(cfg),
                        "--profile", "local", "--wait", "--timeout", "400"],
                       capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stdout + r.stderr
    run, config = runner.open_run(tmp_path / "runs" / "sub3")
    (entry,) = [e for e in run.ledger() if e.get("event") == "submit"]
    assert entry["executor"] == "slurm" and entry["shards"] == [0, 1, 2]  # the one planner
    states = sacct_states([entry["job_id"]], keys=[f"{entry['job_id']}_{i}" for i in range(3)])
    assert states == {f"{entry['job_id']}_{i}": "COMPLETED" for i in range(3)}
    assert all(s.complete for s in runner.status(run, config))
    assert sorted(r.id for r in read_records(run.output_files("emit", 3))) == sorted(
        f"emit-{i}-{j}" for i in range(3) for j in range(2))


# a step that notes the signal and carries on: `then` says how it ends after SIGUSR2
WAIT_FOR_USR2 = 'trap "s=1" USR2; while [ -z "$s" ]; do sleep 0.2; done; echo "step: got SIGUSR2"; '


def test_real_time_limit_signal_ends_each_kind_of_step_correctly(tmp_path):
    """Real --time=1 / --signal=B:USR2@30 (no scancel): the trap forwards USR2, then
    (a) a step that finishes with 0 during the lead ends the job COMPLETED, not requeued;
    (b) a step stopped by the signal with no requeue left fails (its shard is not done);
    (c) a step that crashes after the signal fails with its own code, not requeued;
    (d) a step stopped by the signal is requeued and completes on the second run."""
    cases = {
        "finish": (WAIT_FOR_USR2 + "sleep 1; echo step: finished; exit 0", 3),
        "stopped": (WAIT_FOR_USR2 + "exit 143", 0),
        "crash": (WAIT_FOR_USR2 + "exit 1", 3),
        "requeue": ('if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then echo "step: second run"; exit 0; fi; '
                    + WAIT_FOR_USR2 + "exit 143", 1),
    }
    jobs = {}
    for name, (step, requeues) in cases.items():
        script = render_job(tmp_path / name, name, f"bash -c {shlex.quote(step)}", time="00:01:00",
                            signal_lead_s=30, max_requeues=requeues)
        assert "#SBATCH --signal=B:USR2@30" in script.read_text() and "#SBATCH --time=00:01:00" in script.read_text()
        jobs[name] = sbatch(script)
    release_requeued(list(jobs.values()), time.monotonic() + 300)
    wait_jobs(list(jobs.values()), timeout_s=300)
    acct = {}
    for name, job in jobs.items():
        r = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "State,ExitCode"], capture_output=True,
                           text=True, timeout=60)
        acct[name] = r.stdout.strip()
    logs = {name: (tmp_path / name / f"{name}-{job}_0.out").read_text() for name, job in jobs.items()}
    for name, log in logs.items():
        assert "SIGUSR2: time limit near" in log and "step: got SIGUSR2" in log, (name, log)
    assert acct["finish"] == "COMPLETED|0:0", acct
    assert "step exited with 0" in logs["finish"] and "requeueing" not in logs["finish"]
    assert acct["stopped"].startswith("FAILED|"), acct  # not COMPLETED: its shard is not done
    assert "no requeue left" in logs["stopped"] and "requeueing" not in logs["stopped"]
    assert acct["crash"].startswith("FAILED|1:"), acct
    assert "requeueing" not in logs["crash"]
    assert acct["requeue"] == "COMPLETED|0:0", acct
    assert "requeueing job" in logs["requeue"] and "restart 1" in logs["requeue"] and "step: second run" in logs["requeue"]


HOLD_CFG = """
run: {name: hold, root: "@ROOT@"}
stages:
  train:
    kind: support.slurm_dist
    shape: gpu-multinode
    resources: {gpus: 2, cpus: 2, mem_gb: 3, nodes: 1, time: "00:10:00"}
    params: {hold_first_run: true}
"""


@pytest.mark.slow  # ~60-80 s: torch starts twice (first run, requeued run)
def test_usr2_reaches_every_rank_through_srun_launcher_and_torchrun_then_requeues(tmp_path):
    """The gpu-multinode chain on the real cluster: batch trap -> srun -> the ONE launcher ->
    torchrun (--signals-to-handle with SIGUSR2) -> both gloo ranks stop cleanly; the launcher
    exits 143, the trap requeues, the second run completes; the rendezvous port is the job's own.
    (srun --cpus-per-task is checked by the render test: with TaskPlugin=task/none the local
    cluster binds no cores, so a step gets every CPU of the job either way.)"""
    run, cfg, ex = make_executor(tmp_path, HOLD_CFG)
    ex.launch()
    (job,) = job_ids(run)
    work = run.stage_dir("train") / run.shard_name(0)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(work.glob("holding-rank*"))) < 2:
        time.sleep(0.5)
    assert sorted(p.name for p in work.glob("holding-rank*")) == ["holding-rank0", "holding-rank1"]
    r = subprocess.run(["scancel", "--batch", "--signal=USR2", f"{job}_0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    release_requeued([job], time.monotonic() + 400)
    wait_jobs([job], timeout_s=400)
    assert sorted(p.name for p in work.glob("stopped-*")) == ["stopped-rank0-restart0", "stopped-rank1-restart0"]
    marker = json.loads(run.done_path("train", 0).read_text())
    assert marker["restart"] == 1 and marker["world_size"] == 2 and marker["allreduce_sum"] == 3.0
    assert len(marker["ranks"]) == 2 and marker["rdzv_run_id"] == job == marker["slurm_job_id"]
    assert [r.id for r in read_records([run.shard_path("train", 0)])] == ["dist-0"]  # rank 0 wrote once
    script = next(e for e in run.ledger() if e.get("event") == "submit")["script"]
    assert "srun " in open(script).read() and "-m skymath.train.launch --nproc-per-node 2" in open(script).read()
    log = (run.root.resolve() / "logs" / "train" / f"{job}_0.out").read_text()
    for line in ("SIGUSR2: time limit near", "launcher got SIGUSR2", "after SIGUSR2: stopped (exit 143)",
                 "step exited with 143", f"requeueing job {job}", "restart 1"):
        assert line in log, line
    assert f":{29517 + int(job) % 1000} " in log.replace("--rdzv_id", " --rdzv_id")  # per-job port
    assert "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2" in log and "--shutdown-timeout=30" in log
