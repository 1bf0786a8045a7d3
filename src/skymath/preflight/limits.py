"""Scheduler limits on the launch as a whole: MaxArraySize (a larger stage is split into several
arrays, which is fine and only noted; a profile `max_array_size` above the cluster's is a
problem) and the number of jobs the user may have queued (association MaxSubmitJobs, QOS
MaxSubmitJobsPerUser/PerAccount). Every array task counts as one job for those limits, and a
launch queues all its stages at once (they wait on dependencies), so a paper preset queues
thousands of jobs the moment it is submitted."""

from __future__ import annotations

from collections import defaultdict

from skymath.preflight.facts import ClusterFacts
from skymath.preflight.jobs import JobRequest
from skymath.preflight.problems import Findings, join_stages


def check_limits(jobs: list[JobRequest], facts: ClusterFacts, profile_max_array: int | None) -> Findings:
    f = Findings()
    cluster_max = facts.max_array_size
    parts: dict[str, int] = defaultdict(int)
    for job in jobs:
        if job.role != "stop-service":
            parts[job.stage] += 1
        if cluster_max is not None and job.opt("--array") and job.max_task >= cluster_max:
            f.add("limits", job.stage, f"array task id {job.max_task} is not below the cluster's MaxArraySize "
                  f"{cluster_max} (the profile sets max_array_size: {profile_max_array})",
                  "remove max_array_size from the cluster profile (it is read from `scontrol show config`)")
    for stage, n in parts.items():
        if n > 1:
            size = profile_max_array or cluster_max
            f.note(f"{stage}: split into {n} arrays (MaxArraySize {size}); its dependents wait on all of them")
    _submit_limits(jobs, facts, f)
    return f


def _submit_limits(jobs: list[JobRequest], facts: ClusterFacts, f: Findings) -> None:
    assocs = facts.associations
    qos_all = facts.qos
    if assocs is None and qos_all is None:
        f.note("submit limits not checked: no accounting information (sacctmgr)")
        return
    queued = facts.queued_jobs or 0
    by_qos: dict[str, list[JobRequest]] = defaultdict(list)
    by_account: dict[str, list[JobRequest]] = defaultdict(list)
    for job in jobs:
        by_qos[job.opt("--qos") or _default_qos(facts, job) or ""].append(job)
        by_account[job.opt("--account") or facts.default_account or ""].append(job)
    total = sum(j.tasks for j in jobs)
    f.note(f"this launch queues {total} jobs (array tasks count one each); you have {queued} queued now")
    for name, js in by_qos.items():
        q = (qos_all or {}).get(name)
        if q is None:
            continue
        n = sum(j.tasks for j in js)
        for limit, what in ((q.max_submit_pu, "MaxSubmitJobsPerUser"), (q.max_submit_pa, "MaxSubmitJobsPerAccount")):
            if limit is not None and queued + n > limit:
                f.add("limits", join_stages([j.stage for j in js]),
                      f"{n} jobs under QOS {name} (+{queued} already queued) exceed its {what} {limit}: "
                      "sbatch refuses the submission that crosses it, half-way through the launch",
                      "submit fewer jobs at once: launch stage by stage (`run --stage S`, the next when it is "
                      "done), lower num_shards, or use a QOS with a higher limit")
    for account, js in by_account.items():
        a = next((x for x in assocs or [] if x.account == account), None)
        if a is None or a.max_submit is None:
            continue
        n = sum(j.tasks for j in js)
        if queued + n > a.max_submit:
            f.add("limits", join_stages([j.stage for j in js]),
                  f"{n} jobs under account {account} (+{queued} already queued) exceed your MaxSubmitJobs "
                  f"{a.max_submit}", "launch stage by stage (`run --stage S`), or lower num_shards")


def _default_qos(facts: ClusterFacts, job: JobRequest) -> str | None:
    if not facts.associations:
        return None
    account = job.opt("--account") or facts.default_account
    a = next((x for x in facts.associations if x.account == account), None)
    if a and len(a.qos) == 1:
        return next(iter(a.qos))
    return "normal" if a and "normal" in a.qos else None
