"""One rate budget per API key across processes: the shared schedule paces the whole run, a 429
pauses every client, a filesystem without locks falls back to a fair share, and N shards of a real
synth stage stay under a rate-limited server's limits (local executor)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import threading
import time

import pytest
from support.fault_server import FaultServer

from skymath.config.llm import Endpoint, LLMConfig
from skymath.synth.client import ChatRequest, LLMClient
from skymath.synth.ratebudget import LocalSchedule, LocksUnavailable, SharedSchedule, budget_path

RESERVE = """
import json, sys, time
from skymath.synth.ratebudget import SharedSchedule
s = SharedSchedule(sys.argv[1], rpm=float(sys.argv[2]), tpm=None, headroom=1.0, horizon_s=0.2)
got = []
while len(got) < int(sys.argv[3]):
    times, retry = s.reserve([1.0] * 3)
    got += times
    if not times:
        time.sleep(max(0.0, retry - time.time()))
print(json.dumps(got))
"""


def test_shared_schedule_paces_the_union_of_processes(tmp_path):
    """4 processes reserve 40 slots each from one file: merged, every slot is at least 60/rpm
    after the previous one, so the run never exceeds the limit whatever the number of shards."""
    path, rpm = tmp_path / "k.budget", 6000.0  # one request per 10 ms
    procs = [subprocess.Popen([sys.executable, "-c", RESERVE, str(path), str(rpm), "40"], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    times = sorted(t for p in procs for t in json.loads(p.communicate(timeout=120)[0]))
    assert len(times) == 160
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 60.0 / rpm - 1e-6


def test_tokens_pace_too_and_a_pause_moves_every_slot(tmp_path):
    s = SharedSchedule(tmp_path / "k.budget", rpm=None, tpm=60_000, headroom=1.0, horizon_s=10)  # 1000 tok/s
    t0 = 1000.0
    times, _ = s.reserve([500, 500, 500], now=t0)
    assert times == [t0, t0 + 0.5, t0 + 1.0]
    other = SharedSchedule(tmp_path / "k.budget", rpm=None, tpm=60_000, headroom=1.0, horizon_s=10)
    other.pause(t0 + 30)  # another process saw a 429 with Retry-After 30
    assert s.reserve([1], now=t0 + 2)[0] == []  # nothing within the horizon any more
    assert s.reserve([1], now=t0 + 25)[0] == [t0 + 30]


def test_a_429_with_retry_after_slows_every_client(tmp_path):
    """Client A gets a 429 (Retry-After 1.5 s); client B, another shard with the same key and run,
    sends nothing until the pause is over, although B itself never saw a 429."""
    with FaultServer(schedule=["429"], retry_after=1.5) as srv:
        llm = LLMConfig(model="fault-model", rpm=6000, concurrency=2, timeout_s=5, backoff_base_s=0.01,
                        backoff_max_s=0.05, api_key_env="SKYMATH_TEST_UNSET_KEY")
        clients = [LLMClient.from_config(llm, endpoints=[Endpoint(base_url=srv.base_url)], rate_dir=tmp_path)
                   for _ in range(2)]
        a = threading.Thread(target=clients[0].run_batch,
                             args=([ChatRequest("a", [{"role": "user", "content": "first"}])],))
        a.start()
        while srv.total < 1:
            time.sleep(0.01)
        res = clients[1].run_batch([ChatRequest("b", [{"role": "user", "content": "second"}])])
        a.join(30)
    assert res[0].ok
    t429 = next(e["t"] for e in srv.log if e["action"] == "429")
    t_b = next(e["t"] for e in srv.log if e["n"] > 1 and e["action"] == "ok")
    assert t_b >= t429 + 1.4  # B waited for A's Retry-After
    assert clients[0].usage_totals()["rate_limited"] == 1 and clients[1].usage_totals()["rate_limited"] == 0


def test_without_locks_each_shard_takes_a_fair_share(tmp_path, monkeypatch, caplog):
    import fcntl

    def no_locks(*_a, **_k):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with pytest.raises(LocksUnavailable):
        SharedSchedule(tmp_path / "x.budget", rpm=600, tpm=None)
    llm = LLMConfig(model="m", rpm=600, api_key_env="SKYMATH_TEST_UNSET_KEY")
    c = LLMClient(llm, [Endpoint(base_url="http://127.0.0.1:9/v1")], rate_dir=tmp_path / "rl", fair_share=8)
    budget = c._make_budget()
    assert isinstance(budget.schedule, LocalSchedule)
    assert budget.schedule.req_interval == pytest.approx(60 * 8 / (600 * 0.95))  # 1/8 of the key's rate
    assert "fair share" in caplog.text


def test_the_budget_file_is_named_by_model_and_a_fingerprint_never_the_key(tmp_path):
    key = "sk-live-verysecret-0123456789"
    p = budget_path(tmp_path, "gpt-4-1106-preview", key)
    assert p.parent == tmp_path and p.name.startswith("gpt-4-1106-preview-") and key not in str(p)
    assert budget_path(tmp_path, "gpt-4-1106-preview", key) == p != budget_path(tmp_path, "gpt-4-1106-preview", key + "x")
