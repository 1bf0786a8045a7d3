"""Helpers for the Slurm tests: the real local cluster (never skipped), runs in tmp dirs, waiting."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

UP_HINT = "run `slurm/local-cluster.sh up` (as root) first"


def require_cluster() -> None:
    """Fail (never skip) when the local Slurm cluster is not reachable."""
    if shutil.which("sinfo") is None:
        pytest.fail(f"Slurm is not installed: {UP_HINT}")
    r = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.fail(f"the local Slurm cluster is not up ({r.stderr.strip()}): {UP_HINT}")


def write_profile(tmp_path: Path, **changes) -> Path:
    """A copy of launch/clusters/local.yaml with top-level keys changed."""
    import yaml

    from skymath.config.cluster import clusters_dir

    data = yaml.safe_load((clusters_dir() / "local.yaml").read_text())
    data.update(changes)
    p = tmp_path / "profile.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def make_executor(tmp_path: Path, config_text: str, profile: str | Path = "local"):
    """prepare_run (freezes the config under tmp_path/runs) -> (run, cfg, SlurmExecutor)."""
    from skymath.config.cluster import load_profile
    from skymath.executors.slurm import SlurmExecutor
    from skymath.pipeline import runner

    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(config_text.replace("@ROOT@", str(tmp_path / "runs")))
    run, cfg = runner.prepare_run(cfg_path, executor="slurm")
    return run, cfg, SlurmExecutor(run, cfg, load_profile(str(profile)), quiet=True)


def job_ids(run, **match) -> list[str]:
    return [e["job_id"] for e in run.ledger()
            if e.get("event") == "submit" and all(e.get(k) == v for k, v in match.items())]


def wait_jobs(ids: list[str], timeout_s: float = 300.0) -> None:
    """Wait until none of these jobs is in the queue any more (one squeue per poll)."""
    want = set(ids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = subprocess.run(["squeue", "-h", "-r", "-o", "%F %A %T"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        left = [ln for ln in r.stdout.splitlines() if ln.split() and (ln.split()[0] in want or ln.split()[1] in want)]
        if not left:
            return
        time.sleep(1.0)
    pytest.fail(f"jobs {sorted(want)} still queued after {timeout_s:.0f}s: {left}")


def sacct_states(ids: list[str], expect: int | None = None, keys: list[str] | None = None) -> dict[str, str]:
    """JobID (e.g. 12_2) -> State, from accounting (waits for the records to appear: slurmdbd
    writes them asynchronously, an array's per-task records can lag behind its completion)."""
    out: dict[str, str] = {}
    for _ in range(90):
        r = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out = dict(line.split("|", 1) for line in r.stdout.splitlines() if "|" in line)
        if out and not any(s.startswith(("PENDING", "RUNNING")) for s in out.values()) \
                and (expect is None or len(out) >= expect) and all(k in out for k in keys or []):
            return {k: v.split()[0] for k, v in out.items()}
        time.sleep(1.0)
    return {k: v.split()[0] for k, v in out.items()}


def render_job(tmp_path: Path, name: str, command: str, shape: str = "cpu-single", time: str = "00:01:00",
               **profile_changes) -> Path:
    """A real sbatch script from the templates (local profile + changes) whose step is `command`."""
    from skymath.config.cluster import load_profile
    from skymath.config.schema import StageSpec
    from skymath.executors.render import job_spec, render_script

    tmp_path.mkdir(parents=True, exist_ok=True)
    prof = load_profile(str(write_profile(tmp_path, **profile_changes)))
    js = job_spec(prof, StageSpec(kind="x", shape=shape, resources={"mem_gb": 0.1, "time": time}), stage=name,
                  run_dir=tmp_path, job_name=f"t.{name}", output=str(tmp_path / f"{name}-%A_%a.out"),
                  worker_argv_tail=[], array="0", chdir=tmp_path)
    js.command = command
    f = tmp_path / f"{name}.sh"
    f.write_text(render_script(js))
    return f


def sbatch(script: Path, *opts: str) -> str:
    r = subprocess.run(["sbatch", "--parsable", *opts, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def release_requeued(job_ids: list[str], until: float, settle_s: float = 8.0) -> None:
    """Slurm holds a requeued job until a begin time ~2 min ahead: start the requeued (PENDING on
    BeginTime) ones sooner, while any of these jobs is still queued. Not at once: a job restarted
    while its last run is still being torn down fails ("Job credential revoked")."""
    seen: dict[str, float] = {}
    while time.monotonic() < until:
        r = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T %r"],
                           capture_output=True, text=True, timeout=60)
        lines = [ln.split() for ln in r.stdout.splitlines() if ln.strip()]
        if not lines:
            return
        for jid, state, *reason in lines:
            if state == "PENDING" and any("BeginTime" in x for x in reason):
                first = seen.setdefault(jid, time.monotonic())
                if time.monotonic() - first > settle_s:
                    subprocess.run(["scontrol", "update", f"JobId={jid}", "StartTime=now"], capture_output=True)
                    seen.pop(jid)
        time.sleep(0.5)
