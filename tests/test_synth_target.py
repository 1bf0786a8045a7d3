"""Sample counts that reach a target: the estimator counts every record a method can yield (Evol
chains included) and its request count matches a real synthesis run; `target_records` is reached
by shards that learn the yields from the shards before them, in a real run and in a simulation
of the paper's 1,024-shard array."""

from __future__ import annotations

import hashlib
import json
import random

from support.fault_server import FaultServer
from support.synth_helpers import make_run, read_jsonl, real_seeds, synth_responder

from skymath.config import load_config
from skymath.synth.estimate import estimate_stage
from skymath.synth.target import (
    ShardYield,
    acceptance,
    decide_scale,
    expected_per_unit,
    seeds_per_shard,
)
from skymath.worker import run_shard

PARAMS = {"mix": {"metamath": 1, "evol": 1, "xwin": 1}, "match_gold": False, "evol": {"max_steps": 3},
          "metamath": {"samples": {"answer_aug": 1, "rephrase": 1, "fobar": 1, "self_verification": 1}}}


def _llm(srv: FaultServer) -> dict:
    return {"model": "fault-model", "endpoints": [{"base_url": srv.base_url}], "timeout_s": 5.0,
            "backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retries": 3, "concurrency": 4,
            "api_key_env": "SKYMATH_TEST_UNSET_KEY"}


def picky_responder(body: dict) -> str:
    """Like synth_responder, but ~45% of evolutions come back unchanged (eliminated): real yields
    that differ from the prior in both directions (MetaMath here accepts every answer)."""
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("I want you to act as a math problem creator"):
        h = int(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8], 16)
        if h % 100 < 45:
            return prompt.split("Given problem: ", 1)[1].split("\nNew problem:", 1)[0].strip()
    return synth_responder(body)


def _estimate(run, **params) -> dict:
    cfg = load_config(run.config_path)
    p = cfg.stages["synth"].params
    for k, v in params.items():
        setattr(p, k, v)
    est, _ = estimate_stage(cfg, "synth", run.root, lambda s: max(1, len(s) // 4))
    return est.__dict__


def test_estimate_counts_every_record_and_every_request_of_a_real_run(tmp_path):
    """Every step accepted (yields 1.0): the estimate's expected requests, records and units equal
    what the run actually sent and wrote; Evol trajectories yield max_steps records each."""
    seeds = real_seeds(6, 6)
    with FaultServer(responder=synth_responder) as srv:
        run = make_run(tmp_path, seeds, PARAMS, _llm(srv))
        assert run_shard(run.root, "synth", 0) == 0
    est = _estimate(run, yields={k: 1.0 for k in acceptance(None)})
    records = read_jsonl(run.shard_path("synth", 0))
    marker = run.read_marker(run.done_path("synth", 0))
    assert est["requests_expected"] == srv.total == marker["usage"]["requests"]
    assert est["records_expected"] == est["records_max"] == len(records)
    assert est["units"] == marker["units"]["planned"]
    evol = [r for r in records if r["method"] == "evol"]
    assert len(evol) == 4 * 3 and max(r["meta"]["depth"] for r in evol) == 3  # 4 chains x max_steps
    assert est["requests_low"] <= srv.total <= est["requests_high"]


def test_measured_acceptance_fed_back_predicts_a_picky_run(tmp_path):
    """A run whose evolutions are often eliminated: summary.json measures the acceptance per step;
    the estimate with those yields predicts the run's requests and records closely."""
    seeds = real_seeds(10, 10)
    with FaultServer(responder=picky_responder) as srv:
        run = make_run(tmp_path, seeds, {**PARAMS, "evol": {"max_steps": 3, "trajectories": 3}}, _llm(srv),
                       num_shards=2)
        assert run_shard(run.root, "synth", 0) == 0 and run_shard(run.root, "synth", 1) == 0
    summary = json.loads((run.stage_dir("synth") / "summary.json").read_text())
    acc = summary["acceptance"]
    assert 0.4 < acc["evol.evolve"] < 0.75 and acc["metamath.answer_aug"] == 1.0
    est = _estimate(run, yields=acc)
    produced = summary["records"]
    assert abs(est["records_expected"] - produced) <= 0.1 * produced
    assert abs(est["requests_expected"] - srv.total) <= 0.1 * srv.total
    assert est["requests_low"] <= srv.total <= est["requests_high"]


def test_target_records_reached_by_shards_learning_from_earlier_ones(tmp_path):
    """6 shards one after another with the real engine: the first plans from the prior (which is
    wrong both ways here), the others from the yields measured so far; the stage lands within
    its tolerance of the target, and restarting a finished shard replans nothing."""
    seeds = real_seeds(12, 12)
    target = 240
    params = {**PARAMS, "target_records": target, "target_tolerance": 0.05}
    with FaultServer(responder=picky_responder) as srv:
        run = make_run(tmp_path, seeds, params, _llm(srv), num_shards=6)
        for i in range(6):
            assert run_shard(run.root, "synth", i) == 0
        plans = [json.loads((run.stage_dir("synth") / f"shard-{i:05d}" / "plan.json").read_text()) for i in range(6)]
        sent = srv.total
        assert run_shard(run.root, "synth", 2, force=True) == 0  # a rerun: same plan, all from the cache
        assert srv.total == sent
    summary = json.loads((run.stage_dir("synth") / "summary.json").read_text())
    assert summary["target_records"] == target and summary["within_tolerance"], summary
    produced = sum(len(read_jsonl(run.shard_path("synth", i))) for i in range(6))
    assert produced == summary["records"]
    scales = [p["scale"] for p in plans]
    assert scales[0] != scales[-1] and all(s > 0 for s in scales)  # later shards corrected the prior
    assert json.loads((run.stage_dir("synth") / "shard-00002" / "plan.json").read_text()) == plans[2]


def test_paper_scale_array_reaches_the_target_through_the_same_controller():
    """The controller at the paper's scale: 1,024 shards, 64 running at a time (the array throttle),
    true yields far from the prior. Each simulated shard plans with `decide_scale` (the function the
    engine calls) from what the finished and running shards report, then yields binomially."""
    rng = random.Random(0)
    n_seeds, shards, throttle, target = 75_479, 1024, 64, 2_100_000
    prior_acc = acceptance(None)
    slots = {"metamath.answer_aug": 6, "metamath.rephrase": 3, "metamath.fobar": 3,
             "metamath.self_verification": 3, "evol.trajectory": 24, "xwin.refine": 12}  # per 4 seeds
    prior = {s: expected_per_unit(s, prior_acc, 5)[0] for s in slots}
    true_acc = {**prior_acc, "metamath.answer_aug": 0.35, "metamath.rephrase": 0.3, "evol.evolve": 0.7}
    truth = {s: expected_per_unit(s, true_acc, 5)[0] for s in slots}
    per = seeds_per_shard(n_seeds, shards)

    def draw(units: int, slot: str) -> int:
        """Records from `units` units: mean truth[slot] each, binomial-like spread (normal approx.)."""
        mean = units * truth[slot]
        spread = (units * truth[slot] * max(0.05, 1 - truth[slot] / (5 if slot == "evol.trajectory" else 1))) ** 0.5
        return max(0, round(rng.gauss(mean, spread)))

    views: dict[int, ShardYield] = {}
    running: list[int] = []
    produced = 0
    for i in range(shards):
        if len(running) == throttle:  # the oldest running shard finishes before the next starts
            j = running.pop(0)
            v = views[j]
            v.records = {s: draw(n, s) for s, n in v.planned.items()}
            v.finished, v.done = dict(v.planned), True
            produced += sum(v.records.values())
        base = {s: round(n * per[i] / 4) for s, n in slots.items()}
        unplanned = sum(per[i + 1:])
        d = decide_scale(target, base, per[i], list(views.values()), unplanned, prior, max_scale=20)
        views[i] = ShardYield(i, per[i], d.scale, {s: round(n * d.scale) for s, n in base.items()})
        running.append(i)
    for j in running:  # the last wave
        v = views[j]
        produced += sum(draw(n, s) for s, n in v.planned.items())
    # without feedback (every shard on the prior) the stage would be far off
    naive = sum(sum(round(n * per[i] / 4) * truth[s] for s, n in slots.items()) * views[0].scale for i in range(shards))
    assert abs(naive / target - 1) > 0.15
    assert abs(produced / target - 1) <= 0.02, produced
