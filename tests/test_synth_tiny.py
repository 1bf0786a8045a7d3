"""Happy path on a real model: an `llm-server` stage serving SmolLM2-135M with `transformers serve`
(started ONCE for this module), a synth stage discovering it through the run directory, every
method producing well-formed records, and the server stopping when its consumer completes."""

from __future__ import annotations

import json
import time

import pytest
from support.synth_helpers import make_run, read_jsonl, real_seeds, start_service_worker, stop_service_worker

from skymath.worker import run_shard

PARAMS = {"mix": {"metamath": 1, "evol": 1, "xwin": 1}, "mix_mode": "all", "match_gold": False,
          "drop_truncated": False, "few_shot": False, "max_tokens": 40, "temperature": 0.0,
          "min_problem_chars": 10, "min_length_ratio": 0.0,
          "metamath": {"samples": {"answer_aug": 1}}, "evol": {"max_steps": 1}, "xwin": {"samples": 1}}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("tiny")
    run = make_run(tmp, real_seeds(1, 0), PARAMS,
                   {"service": "server", "concurrency": 2, "timeout_s": 600, "endpoint_wait_s": 300},
                   extra_stages={"server": {"kind": "llm-server",
                                            "params": {"model": "tiny:smollm2", "poll_s": 0.5}}},
                   services=["server"])
    proc = start_service_worker(run, "server", tmp / "server.log")
    yield run, proc
    stop_service_worker(run, "server", proc)


def test_server_publishes_its_endpoint(served):
    run, proc = served
    path = run.service_dir("server") / "endpoint-0.json"
    deadline = time.monotonic() + 300
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert path.exists(), "llm-server did not publish an endpoint"
    ep = json.loads(path.read_text())
    assert ep["base_url"] == f"http://127.0.0.1:{ep['port']}/v1" and ep["shard"] == 0
    assert ep["model"].endswith("model-sampling")  # served copy whose generation config samples
    gen = json.loads((run.stage_dir("server") / "shard-00000" / "model-sampling" / "generation_config.json").read_text())
    assert gen["do_sample"] is True


def test_every_method_makes_well_formed_records_then_server_stops(served):
    run, proc = served
    assert run_shard(run.root, "synth", 0) == 0
    recs = read_jsonl(run.shard_path("synth", 0))
    quarantine = read_jsonl(run.shard_path("synth", 0, ".quarantine.jsonl"))
    # SmolLM2-135M rarely follows the Evol prompt (it describes "the new problem" instead of writing
    # one), so not every method survives the filters; nothing may be lost, and what is kept is well-formed
    assert recs, quarantine
    units = read_jsonl(run.stage_dir("synth") / "shard-00000" / "units.jsonl")
    assert {u["method"] for u in units} == {"metamath", "evol", "xwin"}
    assert all(u["records"] or u["rejected"] for u in units)
    assert all(q["reason"] for q in quarantine)
    for r in recs:
        assert r["response"].endswith("\nThe answer is " + r["answer"]) and r["answer"]
        assert r["meta"]["model"] and r["meta"]["sampling"]["max_tokens"] == 40
        assert r["meta"]["usage"]["completion_tokens"] > 0 and r["stage"] == "synth"
    marker = json.loads(run.done_path("synth", 0).read_text())
    assert marker["usage"]["requests"] >= 4 and marker["usage"]["cost_usd"] == 0.0
    assert marker["usage"]["reference_cost_usd"] > 0  # what GPT-4 would have charged
    # the consumer is complete: the server shuts itself down and withdraws its endpoint
    assert proc.wait(120) == 0
    assert not (run.service_dir("server") / "endpoint-0.json").exists()
