"""The synth stage through the real worker against a loopback fault server: exactly-once records,
permanent failures listed, exact usage, SIGKILL + rerun, sharding, and the API key never leaking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from support.fault_server import FaultServer, Rule
from support.synth_helpers import make_run, read_jsonl, real_seeds, synth_responder

from skymath.worker import run_shard

PARAMS = {"mix": {"metamath": 1, "evol": 1, "xwin": 1}, "match_gold": False, "evol": {"max_steps": 2}}


def _llm(srv: FaultServer, **kw) -> dict:
    base = {"model": "fault-model", "endpoints": [{"base_url": srv.base_url}], "timeout_s": 1.0,
            "backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retries": 4, "concurrency": 4,
            "api_key_env": "SKYMATH_TEST_UNSET_KEY"}
    base.update(kw)
    return base


def _ids(run, shards: int = 1) -> list[str]:
    return [r["id"] for i in range(shards) for r in read_jsonl(run.shard_path("synth", i))]


def test_faults_exactly_once_failures_listed_usage_exact(tmp_path):
    seeds = real_seeds(4, 4)
    faults = ["429", "500", "malformed", "empty", "slow", "drop"] * 2
    with FaultServer(responder=synth_responder) as clean:
        ref = make_run(tmp_path, seeds, PARAMS, _llm(clean), name="ref")
        assert run_shard(ref.root, "synth", 0) == 0
    expected = _ids(ref)
    assert len(expected) == len(set(expected)) >= 12
    # same seeds, now with faults on the way and one seed whose every request fails permanently
    doomed = seeds[1]["problem"][:40]
    rules = [Rule(doomed, ["500"], repeat_last=True)]
    with FaultServer(responder=synth_responder, schedule=faults, rules=rules, retry_after=0.05, slow_s=2.0) as srv:
        # more retries than scheduled faults: with 4 requests in flight one request can draw several
        # faults in a row, but only the doomed seed can exhaust its attempts
        run = make_run(tmp_path, seeds, {**PARAMS, "failure_tolerance": 0.5}, _llm(srv, max_retries=len(faults)),
                       name="faulty")
        assert run_shard(run.root, "synth", 0) == 0
    ids = _ids(run)
    assert len(ids) == len(set(ids))  # nothing twice
    doomed_ids = {r["id"] for r in read_jsonl(ref.shard_path("synth", 0)) if r["meta"]["seed_id"] == seeds[1]["id"]}
    assert doomed_ids and set(ids) == set(expected) - doomed_ids  # everything else exactly once
    failures = read_jsonl(run.shard_path("synth", 0, ".failures.jsonl"))
    assert failures and {f["seed_id"] for f in failures} == {seeds[1]["id"]}
    assert all("HTTP 500" in f["reason"] and f["attempts"] == len(faults) + 1 for f in failures)
    marker = json.loads(run.done_path("synth", 0).read_text())
    usage = marker["usage"]
    assert usage["prompt_tokens"] == srv.usage_served["prompt_tokens"]
    assert usage["completion_tokens"] == srv.usage_served["completion_tokens"]
    assert usage["requests"] == srv.total and usage["failures"] == len(failures)
    assert all(n == 1 for n in srv.ok_bodies.values())  # no successful request sent twice
    for r in read_jsonl(run.shard_path("synth", 0)):
        assert r["response"].endswith("\nThe answer is " + r["answer"])


def test_over_tolerance_fails_then_rerun_retries_only_failures(tmp_path):
    seeds = real_seeds(3, 0)
    doomed = seeds[0]["problem"][:40]
    with FaultServer(responder=synth_responder, rules=[Rule(doomed, ["500"], repeat_last=True)]) as srv:
        run = make_run(tmp_path, seeds, PARAMS, _llm(srv, max_retries=1))
        assert run_shard(run.root, "synth", 0) == 1  # default tolerance 1%: the shard is not done
        assert not run.is_done("synth", 0) and run.failed_path("synth", 0).exists()
        assert read_jsonl(run.shard_path("synth", 0, ".failures.jsonl"))
        first_ok = sum(srv.ok_bodies.values())
        srv.rules.clear()  # the provider recovers
        assert run_shard(run.root, "synth", 0) == 0
    assert run.is_done("synth", 0)
    assert all(n == 1 for n in srv.ok_bodies.values()) and sum(srv.ok_bodies.values()) > first_ok
    assert read_jsonl(run.shard_path("synth", 0, ".failures.jsonl")) == []
    ids = _ids(run)
    assert len(ids) == len(set(ids)) and any(r["meta"]["seed_id"] == seeds[0]["id"]
                                              for r in read_jsonl(run.shard_path("synth", 0)))


def test_sigkill_mid_run_then_rerun_exact_ids_nothing_resent(tmp_path):
    seeds = real_seeds(3, 3)
    with FaultServer(responder=synth_responder) as clean:
        ref = make_run(tmp_path, seeds, PARAMS, _llm(clean), name="ref")
        assert run_shard(ref.root, "synth", 0) == 0
    expected = sorted(_ids(ref))
    total_requests = clean.total
    proc: dict = {}
    killed = threading.Event()

    def kill_at(n: int, body: dict) -> str | None:
        if n == total_requests // 2 and not killed.is_set():
            os.kill(proc["p"].pid, signal.SIGKILL)
            proc["p"].wait(30)
            killed.set()
            return "drop"  # this request was never answered
        return None

    with FaultServer(responder=synth_responder, on_request=kill_at) as srv:
        run = make_run(tmp_path, seeds, PARAMS, _llm(srv, concurrency=1), name="killed")
        cmd = [sys.executable, "-m", "skymath.worker", str(run.root), "synth", "0"]
        log = open(tmp_path / "worker.log", "wb")
        proc["p"] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        proc["p"].wait(240)
        # the server thread sets `killed` after ITS wait: the main thread may reap the worker first
        assert killed.wait(30) and proc["p"].returncode == -signal.SIGKILL
        assert not run.is_done("synth", 0)
        assert subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=240).returncode == 0
    ids = _ids(run)
    assert sorted(ids) == expected  # exactly the expected ids, no duplicates
    resent = {k: n for k, n in srv.ok_bodies.items() if n > 1}
    assert resent == {}  # the cache answered every request that had succeeded before the kill
    assert sum(srv.ok_bodies.values()) == total_requests
    assert Counter(e["action"] for e in srv.log)["drop"] == 1


def test_shards_partition_the_seeds_with_stable_ids(tmp_path):
    seeds = real_seeds(4, 2)
    with FaultServer(responder=synth_responder) as srv:
        one = make_run(tmp_path, seeds, PARAMS, _llm(srv), name="one")
        assert run_shard(one.root, "synth", 0) == 0
        three = make_run(tmp_path, seeds, PARAMS, _llm(srv), num_shards=3, name="three")
        for i in range(3):
            assert run_shard(three.root, "synth", i) == 0
    per_shard = [set(_ids(three, 1)) if i == 0 else {r["id"] for r in read_jsonl(three.shard_path("synth", i))}
                 for i in range(3)]
    assert all(per_shard) and not (per_shard[0] & per_shard[1]) and not (per_shard[1] & per_shard[2])
    # ids depend on (stage, seed, method, sub-method, sample, depth), not on the shard count
    assert set().union(*per_shard) == set(_ids(one))
    methods = Counter(r["method"] for r in read_jsonl(one.shard_path("synth", 0)))
    assert set(methods) == {"metamath", "evol", "xwin"}


def test_api_key_never_written_anywhere(tmp_path, monkeypatch):
    secret = "sk-test-NEVERWRITE-7f3a9c"
    monkeypatch.setenv("SKYMATH_TEST_SECRET_KEY", secret)
    seeds = real_seeds(2, 1)
    rules = [Rule(seeds[0]["problem"][:40], ["401"], repeat_last=True)]  # error text echoes the key
    with FaultServer(responder=synth_responder, rules=rules) as srv:
        run = make_run(tmp_path, seeds, {**PARAMS, "failure_tolerance": 1.0},
                       _llm(srv, api_key_env="SKYMATH_TEST_SECRET_KEY"))
        log = tmp_path / "worker.log"
        with open(log, "wb") as f:
            r = subprocess.run([sys.executable, "-m", "skymath.worker", str(run.root), "synth", "0"],
                               stdout=f, stderr=subprocess.STDOUT, timeout=240, env={**os.environ})
        assert r.returncode == 0
    assert srv.auth_seen == {f"Bearer {secret}"}  # the key was used ...
    failures = read_jsonl(run.shard_path("synth", 0, ".failures.jsonl"))
    assert failures and all("Incorrect API key provided: Bearer ***" in f["reason"] for f in failures)
    leaked = []
    for path in [log, *Path(run.root).rglob("*")]:  # records, failures, unit log, cache, markers, config
        if path.is_file() and secret.encode() in path.read_bytes():
            leaked.append(str(path))
    assert leaked == []  # ... and written nowhere


def test_stop_past_the_grace_period_exits_143_and_resumes_exactly(tmp_path):
    """A time-limit USR2 while slow requests are in flight beyond stop_grace_s: the shard stops
    (143, requeue) instead of failing (1), and the rerun writes every id exactly once."""
    seeds = real_seeds(2, 2)
    with FaultServer(responder=synth_responder) as clean:
        ref = make_run(tmp_path, seeds, PARAMS, _llm(clean), name="ref")
        assert run_shard(ref.root, "synth", 0) == 0
    expected = sorted(_ids(ref))
    started = threading.Event()

    def note(n: int, body: dict) -> str | None:
        started.set()
        return None

    with FaultServer(responder=synth_responder, latency_s=3.0, on_request=note) as srv:
        run = make_run(tmp_path, seeds, {**PARAMS, "stop_grace_s": 0.2}, _llm(srv, timeout_s=30.0), name="stopped")
        cmd = [sys.executable, "-m", "skymath.worker", str(run.root), "synth", "0"]
        log = open(tmp_path / "worker.log", "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        assert started.wait(240)
        p.send_signal(signal.SIGUSR2)
        assert p.wait(240) == 143, (tmp_path / "worker.log").read_text()[-2000:]
        assert not run.is_done("synth", 0)
        srv.latency_s = 0.0
        assert subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=240).returncode == 0
    assert sorted(_ids(run)) == expected
