"""Would the cluster take each rendered job, and could it ever start it?

Two independent answers, both from the exact `#SBATCH` options of the rendered scripts:
* our own comparison with what the cluster reports (partition exists and is up, MaxTime, nodes
  with enough CPUs / memory / GPUs / the constraint's features, account and QOS of the user),
  which names the profile or stage key to change;
* `sbatch --test-only SCRIPT`, the cluster's own verdict (site plugins, limits we do not model).
A rejection that our comparison did not explain is reported with sbatch's own words.
A time above MaxTime is reported even where the site does not enforce it at submission
(EnforcePartLimits=NO): such a job would wait in the queue forever (reason PartitionTimeLimit).
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from skymath.preflight.facts import ClusterFacts, gres_count, time_limit_seconds
from skymath.preflight.jobs import JobRequest
from skymath.preflight.problems import Findings


def _gb(mb: int) -> str:
    return f"{mb / 1024:g} GB"


def _label(job: JobRequest) -> str:
    return f"{job.stage} (stop job)" if job.role == "stop-service" else job.stage


def _features_ok(constraint: str | None, features: set[str]) -> bool | None:
    """Does a node with these features satisfy the constraint? None: too complex to judge here."""
    if not constraint:
        return True
    if re.fullmatch(r"[A-Za-z0-9_.-]+([&,][A-Za-z0-9_.-]+)*", constraint):
        return all(f in features for f in re.split(r"[&,]", constraint))
    if re.fullmatch(r"[A-Za-z0-9_.-]+(\|[A-Za-z0-9_.-]+)*", constraint):
        return any(f in features for f in constraint.split("|"))
    return None


def site_key(cfg: Any, profile: Any, job: JobRequest, name: str, default: str) -> str:
    """The profile/stage key a site option came from (e.g. `shapes.gpu-array.constraint`)."""
    from skymath.executors.render import site_options

    spec = cfg.stages.get(job.stage)
    shape = "cpu-single" if job.role == "stop-service" or spec is None else (spec.shape or "cpu-single")
    res = None if job.role == "stop-service" or spec is None else spec.resources
    try:
        return site_options(profile, shape, res, job.stage).keys.get(name, default)
    except Exception:  # noqa: BLE001 - only a hint for the fix text
        return default


def check_resources(jobs: list[JobRequest], facts: ClusterFacts, cfg: Any, profile: Any) -> Findings:
    f = Findings()
    parts = facts.partitions
    if not parts:
        f.add("cluster", "-", f"cannot read the cluster's partitions ({facts.errors.get('partitions', 'no answer')})",
              "run check where `scontrol` reaches the cluster (a login node)")
        return f
    for job in jobs:
        _check_job(job, facts, cfg, profile, f)
    return f


def _check_job(job: JobRequest, facts: ClusterFacts, cfg: Any, profile: Any, f: Findings) -> None:
    label = _label(job)
    pname = job.partition or facts.default_partition
    part = facts.partition(pname)
    if part is None:
        key = site_key(cfg, profile, job, "partition", "partitions")
        f.add("cluster", label, f"partition {pname!r} does not exist on this cluster "
              f"(partitions: {', '.join(sorted(facts.partitions))})",
              f"set {key} in the cluster profile (or the stage's resources.partition) to an existing partition")
        return
    if not part.state.startswith("UP"):
        f.add("cluster", label, f"partition {part.name} is {part.state}, not UP", "wait for the site, or use another partition")
    want_s = time_limit_seconds(job.opt("--time"))
    if want_s is not None and part.max_time_s is not None and want_s > part.max_time_s:
        f.add("cluster", label, f"asks --time={job.opt('--time')}, above partition {part.name}'s MaxTime "
              f"{part.max_time} (the job would be rejected, or wait forever)",
              f"lower stages.{job.stage}.resources.time to at most {part.max_time} (a job stopped by its limit "
              "checkpoints and requeues), and set the profile's time_limits to the partition's MaxTime")
    if job.nodes > len(part.nodes):
        f.add("cluster", label, f"asks {job.nodes} nodes; partition {part.name} has {len(part.nodes)}",
              f"lower stages.{job.stage}.resources.nodes to at most {len(part.nodes)}")
    constraint = job.opt("--constraint")
    nodes = part.nodes
    matching = [n for n in nodes if _features_ok(constraint, n.features) is not False]
    if constraint and nodes and not matching:
        feats = sorted({x for n in nodes for x in n.features})
        key = site_key(cfg, profile, job, "constraint", "constraint")
        f.add("cluster", label, f"--constraint={constraint} matches no node of partition {part.name} "
              f"(features there: {', '.join(feats) or 'none'})",
              f"move the constraint from {key} to the shapes that need it (shapes.gpu-array.constraint, "
              "shapes.gpu-multinode.constraint), or use a partition whose nodes have it")
        return
    pool = matching or nodes
    if not pool:
        return
    mem = job.mem_mb
    if mem and mem > max(n.mem_mb for n in pool):
        big = max(n.mem_mb for n in pool)
        f.add("cluster", label, f"asks {_gb(mem)} memory per node; the largest node of partition {part.name}"
              f"{' with ' + constraint if constraint else ''} has {_gb(big)}",
              f"lower stages.{job.stage}.resources.mem_gb to at most {big // 1024}")
    if job.cpus > max(n.cpus for n in pool):
        big = max(n.cpus for n in pool)
        f.add("cluster", label, f"asks {job.cpus} CPUs per task; the largest node of partition {part.name} has {big}",
              f"lower stages.{job.stage}.resources.cpus to at most {big}")
    gres = job.gres
    if gres:
        name, gtype, count = gres
        most = max(gres_count(n.gres, name, gtype) for n in pool)
        if count > most:
            what = f"{name}:{gtype}" if gtype else name
            if most == 0:
                f.add("cluster", label, f"asks --gres={job.opt('--gres')}; no node of partition {part.name} has "
                      f"gres {what}", "use a GPU partition (partitions.gpu), fix gres_name, or set gpu_gres: false "
                      "on a cluster without GPU gres")
            else:
                f.add("cluster", label, f"asks {count} GPUs per node (--gres={job.opt('--gres')}); nodes of partition "
                      f"{part.name} have at most {most}",
                      f"set stages.{job.stage}.resources.gpus (or the profile's gpus_per_node) to at most {most}")
    _check_account_qos(job, facts, cfg, profile, f, want_s)


def _check_account_qos(job: JobRequest, facts: ClusterFacts, cfg: Any, profile: Any, f: Findings,
                       want_s: int | None) -> None:
    label = _label(job)
    assocs = facts.associations
    account = job.opt("--account") or facts.default_account
    assoc = None
    if assocs is not None and account:
        mine = {a.account: a for a in assocs}
        assoc = mine.get(account)
        if assoc is None:
            key = site_key(cfg, profile, job, "account", "account")
            f.add("cluster", label, f"account {account!r} is unknown for user {facts.user} on this cluster "
                  f"(your accounts: {', '.join(sorted(mine)) or 'none'})",
                  f"set {key} in the cluster profile to one of your accounts")
    qos_name = job.opt("--qos")
    qos_all = facts.qos
    if qos_name and qos_all is not None:
        key = site_key(cfg, profile, job, "qos", "qos")
        if qos_name not in qos_all:
            f.add("cluster", label, f"QOS {qos_name!r} does not exist (QOS: {', '.join(sorted(qos_all))})",
                  f"set {key} in the cluster profile to an existing QOS, or remove it")
        elif assoc is not None and assoc.qos and qos_name not in assoc.qos:
            f.add("cluster", label, f"QOS {qos_name!r} is not allowed for account {account} "
                  f"(allowed: {', '.join(sorted(assoc.qos))})", f"set {key} to one of those")
        else:
            q = qos_all[qos_name]
            if want_s is not None and q.max_wall_s is not None and want_s > q.max_wall_s:
                f.add("cluster", label, f"asks --time={job.opt('--time')}, above QOS {qos_name}'s MaxWall {q.max_wall}",
                      f"lower stages.{job.stage}.resources.time to at most {q.max_wall}")


def sbatch_test_only(script: str, timeout: float = 60.0) -> tuple[bool, str]:
    """(accepted, sbatch's message) for `sbatch --test-only SCRIPT` (submits nothing)."""
    try:
        r = subprocess.run(["sbatch", "--test-only", script], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return False, "sbatch: command not found"
    except subprocess.TimeoutExpired:
        return False, f"sbatch --test-only gave no answer within {timeout:.0f} s"
    text = (r.stderr + r.stdout).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    msg = lines[-1] if lines else ""
    if r.returncode != 0 and len(lines) > 1 and lines[-1].startswith("allocation failure"):
        msg = "; ".join(dict.fromkeys([lines[-1], *[ln for ln in lines if "error" in ln]]))
    return r.returncode == 0, msg


def check_test_only(jobs: list[JobRequest], explained: set[str]) -> tuple[Findings, int]:
    """sbatch --test-only on every script; rejections of stages not in `explained` become rows.
    Returns the findings and how many scripts the cluster accepted."""
    f = Findings()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda j: sbatch_test_only(str(j.script)), jobs))
    accepted = 0
    for job, (ok, msg) in zip(jobs, results, strict=True):
        if ok:
            accepted += 1
            continue
        label = _label(job)
        if label in explained:
            continue
        f.add("cluster", label, f"the cluster rejects this job: {msg}",
              f"see `sbatch --test-only {job.script}`; change the stage's resources or the profile value it names")
    return f, accepted
