"""The ONE planner (executors/planner.py) as a pure function: shards, arrays, dependencies, and
service start/stop jobs from the DAG, the markers and what is still queued. No cluster needed."""

from __future__ import annotations

import pytest

from skymath.errors import UserError
from skymath.executors.planner import PlanInput, QueuedJob, plan_jobs, plan_summary


def make_input(stages: dict[str, dict], done: dict[str, set[int]] | None = None,
               queued: list[QueuedJob] | None = None, max_array: int = 1001) -> PlanInput:
    """stages: name -> {shards, parents, services, service (bool), throttle}."""
    order = list(stages)  # given in topological order
    return PlanInput(
        order=order, num_shards={n: s.get("shards", 1) for n, s in stages.items()},
        parents={n: s.get("parents", []) for n, s in stages.items()},
        services={n: s.get("services", []) for n, s in stages.items()},
        is_service=lambda n: stages[n].get("service", False), done=done or {}, queued=queued or [],
        max_array_size=max_array, throttle={n: s.get("throttle") for n, s in stages.items()})


def summary(inp: PlanInput, selected: list[str] | None = None) -> list[tuple[str, str, str, str | None]]:
    return [(s["key"], s["role"], s["shards"], s["dependency"])
            for s in plan_summary(plan_jobs(inp, selected or inp.order))]


def test_arrays_split_at_max_array_size_and_dependents_wait_for_every_part():
    inp = make_input({"a": {"shards": 10, "throttle": 2}, "b": {"parents": ["a"], "shards": 3}}, max_array=4)
    jobs = plan_jobs(inp, ["a", "b"])
    assert [(j.key, j.array, j.base) for j in jobs] == [
        ("a.p0", "0-3%2", 0), ("a.p1", "0-3%2", 4), ("a.p2", "0-1%2", 8), ("b.p0", "0-2", 0)]
    assert jobs[3].dependency == "afterok:<a.p0>:<a.p1>:<a.p2>"


def test_done_and_queued_shards_are_never_planned_again_and_queued_ones_are_waited_on():
    q = QueuedJob("a", "500", "stage", shards=[0, 1, 2, 3], tasks=[0, 1, 2, 3], active_shards=[2, 3])
    inp = make_input({"a": {"shards": 6}, "b": {"parents": ["a"]}}, done={"a": {0, 1}}, queued=[q])
    assert summary(inp) == [("a.p0", "stage", "4-5", None),
                            ("b.p0", "stage", "0", "afterok:<a.p0>:500_2:500_3")]
    # the whole earlier job still queued: one reference to it
    q2 = QueuedJob("a", "600", "stage", shards=[0, 1], tasks=[0, 1], active_shards=[0, 1])
    inp = make_input({"a": {"shards": 2}, "b": {"parents": ["a"]}}, queued=[q2])
    assert summary(inp) == [("b.p0", "stage", "0", "afterok:600")]


def test_resubmitting_a_stage_whose_parent_is_neither_done_nor_queued_is_refused():
    inp = make_input({"a": {"shards": 2}, "b": {"parents": ["a"]}}, done={"a": {0}})
    with pytest.raises(UserError, match=r"stage b needs stage 'a', whose shards \[1\] are neither done nor queued"):
        plan_jobs(inp, ["b"])


def test_a_service_waits_on_its_consumers_parents_and_a_stop_job_covers_every_consumer():
    inp = make_input({"seeds": {}, "llm": {"service": True, "shards": 2},
                      "synth": {"parents": ["seeds"], "services": ["llm"], "shards": 4}})
    assert summary(inp) == [
        ("seeds.p0", "stage", "0", None),
        ("llm.p0", "service", "0-1", "afterok:<seeds.p0>"),  # not idling while seeds run
        ("synth.p0", "stage", "0-3", "afterok:<seeds.p0>,after:<llm.p0>"),
        ("llm.stop", "stop-service", "", "afterany:<synth.p0>"),
    ]
    jobs = plan_jobs(inp, inp.order)
    assert not jobs[3].kill_on_invalid and jobs[3].service_refs == [1]


def test_consumers_with_different_parents_start_the_service_when_any_is_ready():
    inp = make_input({"seeds": {}, "seeds-hard": {}, "llm": {"service": True},
                      "synth": {"parents": ["seeds"], "services": ["llm"]},
                      "synth-hard": {"parents": ["seeds-hard"], "services": ["llm"]}})
    got = {k: (role, dep) for k, role, _, dep in summary(inp)}
    assert got["llm.p0"] == ("service", "afterok:<seeds.p0>?afterok:<seeds-hard.p0>")
    assert got["llm.stop"] == ("stop-service", "afterany:<synth.p0>:<synth-hard.p0>")
    # a consumer that can start now: the service starts now
    inp = make_input({"seeds": {}, "llm": {"service": True}, "a": {"services": ["llm"]},
                      "b": {"parents": ["seeds"], "services": ["llm"]}})
    assert {k: dep for k, _, _, dep in summary(inp)}["llm.p0"] is None


def test_reusing_a_queued_service_replaces_its_pending_stop_job_with_one_covering_all_consumers():
    svc = QueuedJob("llm", "700", "service", shards=[0], tasks=[0], active_shards=[0], state="RUNNING")
    old_consumer = QueuedJob("synth", "701", "stage", shards=[0, 1], tasks=[0, 1], active_shards=[1])
    stop = QueuedJob("llm", "702", "stop-service", [], [], [], array=False, state="PENDING")
    stages = {"llm": {"service": True}, "synth": {"services": ["llm"], "shards": 2},
              "synth2": {"services": ["llm"]}}
    inp = make_input(stages, done={"synth": {0}}, queued=[svc, old_consumer, stop])
    jobs = plan_jobs(inp, ["synth2"])
    assert [(j.key, j.dependency) for j in jobs] == [
        ("synth2.p0", "after:700"), ("llm.stop", "afterany:<synth2.p0>:701_1")]
    assert jobs[1].replaces == ["702"] and jobs[1].service_refs == ["700"]
    # a stop job already running: the service is stopping, so a new one is started
    stopping = QueuedJob("llm", "702", "stop-service", [], [], [], array=False, state="RUNNING")
    inp = make_input(stages, done={"synth": {0}}, queued=[svc, old_consumer, stopping])
    assert [(k, r) for k, r, _, _ in summary(inp, ["synth2"])] == [
        ("llm.p0", "service"), ("synth2.p0", "stage"), ("llm.stop", "stop-service")]


def test_the_plan_is_a_pure_function_of_its_input():
    stages = {"a": {"shards": 5}, "llm": {"service": True}, "b": {"parents": ["a"], "services": ["llm"], "shards": 3}}
    first = summary(make_input(stages, done={"a": {1}}))
    assert first == summary(make_input(stages, done={"a": {1}}))
    assert first[0] == ("a.p0", "stage", "0,2-4", None)
