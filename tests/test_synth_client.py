"""LLMClient against a real loopback OpenAI-compatible server that injects faults."""

from __future__ import annotations

import os
import time

import pytest
from support.fault_server import FaultServer, Rule

from skymath.config.llm import Endpoint, LLMConfig
from skymath.errors import UserError
from skymath.synth.client import ChatRequest, LLMClient
from skymath.synth.ratelimit import parse_duration, parse_retry_after


def _llm(**kw) -> LLMConfig:
    base = {"model": "fault-model", "timeout_s": 1.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
            "max_retries": 6, "concurrency": 4, "api_key_env": "SKYMATH_TEST_UNSET_KEY"}
    base.update(kw)
    return LLMConfig(**base)


def _reqs(n: int, tag: str = "p") -> list[ChatRequest]:
    return [ChatRequest(f"{tag}{i}", [{"role": "user", "content": f"problem {tag} {i} please"}]) for i in range(n)]


def test_faults_each_request_answered_once_usage_exact():
    schedule = ["429", "500", "malformed", "empty", "slow", "drop", "500", "429"]
    with FaultServer(schedule=schedule, retry_after=0.2, slow_s=2.5) as srv:
        client = LLMClient.from_config(_llm(), endpoints=[Endpoint(base_url=srv.base_url)])
        t0 = time.monotonic()
        res = client.run_batch(_reqs(12))
        elapsed = time.monotonic() - t0
    assert [r.key for r in res] == [f"p{i}" for i in range(12)]  # request order kept
    assert all(r.ok and r.text for r in res), [r.error for r in res if not r.ok]
    assert sum(r.attempts for r in res) == srv.total == 12 + len(schedule)
    assert all(v == 1 for v in srv.ok_bodies.values()) and len(srv.ok_bodies) == 12
    tot = client.usage_totals()
    assert tot["requests"] == srv.total and tot["succeeded"] == 12 and tot["failures"] == 0
    assert tot["prompt_tokens"] == srv.usage_served["prompt_tokens"]
    assert tot["completion_tokens"] == srv.usage_served["completion_tokens"]
    assert tot["cost_usd"] == 0.0 and tot["unpriced_models"] == ["fault-model"]  # not in the price table
    assert tot["reference_model"] == "gpt-4-1106-preview"  # the paper's model: $10 / $30 per 1M tokens
    assert tot["reference_cost_usd"] == pytest.approx(
        (tot["prompt_tokens"] * 10 + tot["completion_tokens"] * 30) / 1e6)
    assert tot["rate_limited"] == 2  # the two scheduled 429s
    assert elapsed >= 0.2  # Retry-After was waited for


def test_permanent_failures_keep_attempts_and_last_error():
    rules = [Rule("problem p 1 ", ["500"], repeat_last=True), Rule("problem p 2 ", ["400"])]
    with FaultServer(rules=rules) as srv:
        client = LLMClient.from_config(_llm(max_retries=3), endpoints=[Endpoint(base_url=srv.base_url)])
        res = client.run_batch(_reqs(4))
    assert res[0].ok and res[3].ok
    assert not res[1].ok and res[1].attempts == 4 and "HTTP 500" in res[1].error
    assert not res[2].ok and res[2].attempts == 1 and "HTTP 400" in res[2].error  # not retried
    assert client.usage_totals()["failures"] == 2


def test_retry_after_is_honoured_whatever_its_size():
    client = LLMClient.from_config(_llm(backoff_max_s=5.0), endpoints=[Endpoint(base_url="http://127.0.0.1:9/v1")])
    assert client._backoff(1, 90.0) >= 90.0  # beyond 60 s: waited, not capped
    assert client._backoff(1, None) <= 0.05
    assert parse_retry_after({"retry-after": "120"}) == 120.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_duration("6m0s") == 360.0 and parse_duration("20ms") == 0.02


def test_cache_means_a_rerun_sends_nothing(tmp_path):
    with FaultServer() as srv:
        c1 = LLMClient.from_config(_llm(), cache_dir=tmp_path, endpoints=[Endpoint(base_url=srv.base_url)])
        r1 = c1.run_batch(_reqs(5))
        c1.close()
        assert srv.total == 5
        c2 = LLMClient.from_config(_llm(), cache_dir=tmp_path, endpoints=[Endpoint(base_url=srv.base_url)])
        r2 = c2.run_batch(_reqs(5) + [ChatRequest("new", [{"role": "user", "content": "problem p 0 please"}],
                                                   sample_index=1)])
        c2.close()
    assert srv.total == 6  # only the new sample index went out
    assert [r.text for r in r2[:5]] == [r.text for r in r1] and all(r.cached for r in r2[:5])
    assert not r2[5].cached and c2.usage_totals()["cached"] == 5


def test_round_robin_skips_an_endpoint_that_is_down():
    with FaultServer(model="m") as a, FaultServer(model="m") as b:
        dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
        eps = [Endpoint(base_url=a.base_url), Endpoint(base_url=dead), Endpoint(base_url=b.base_url)]
        client = LLMClient.from_config(_llm(concurrency=2, endpoint_down_s=30), endpoints=eps)
        res = client.run_batch(_reqs(20))
    assert all(r.ok for r in res)
    assert a.total + b.total == 20 and a.total >= 5 and b.total >= 5


def test_api_key_from_env_or_0600_file(tmp_path, monkeypatch):
    secret = "sk-test-Zq81secretvalue"
    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    key_file.chmod(0o644)
    with pytest.raises(UserError, match="chmod 600"):
        LLMClient.from_config(_llm(api_key_file=key_file), endpoints=[Endpoint(base_url="http://127.0.0.1:9/v1")])
    key_file.chmod(0o600)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        LLMClient.from_config(_llm(api_key_env="OPENAI_API_KEY"))  # the real API needs a key
    with FaultServer(rules=[Rule("problem p 1 ", ["401"])]) as srv:
        client = LLMClient.from_config(_llm(api_key_file=key_file), endpoints=[Endpoint(base_url=srv.base_url)])
        res = client.run_batch(_reqs(2))
    assert srv.auth_seen == {f"Bearer {secret}"}
    assert not res[1].ok and "Incorrect API key" in res[1].error and secret not in res[1].error
    assert os.stat(key_file).st_mode & 0o777 == 0o600


def test_prices_paper_model_dated_table_no_prefix_guessing():
    from skymath.synth.accounting import cost, price_for

    llm = _llm()
    assert llm.prices_as_of and LLMConfig().model == "gpt-4-1106-preview"  # the paper's model by default
    p = price_for(llm, "gpt-4-1106-preview")
    assert (p.prompt, p.completion) == (10.0, 30.0)
    assert cost(p, 1_000_000, 1_000_000) == 40.0
    assert price_for(llm, "gpt-4-0613").prompt == 30.0  # a dated snapshot of gpt-4
    assert price_for(llm, "gpt-4o-2024-08-06").prompt == 2.5
    assert price_for(llm, "gpt-4.1").prompt == 2.0  # not gpt-4's $30
    assert price_for(llm, "gpt-4-some-future-model") is None  # unknown: unpriced, never guessed
    # entries given in the config are merged over the table
    mine = _llm(prices={"my-model": {"prompt": 1.0, "completion": 2.0}, "gpt-4o": {"prompt": 2.0, "completion": 8.0}})
    assert price_for(mine, "my-model").completion == 2.0 and price_for(mine, "gpt-4o").prompt == 2.0
    assert price_for(mine, "gpt-4-1106-preview").prompt == 10.0


def test_local_endpoints_are_local_generation_not_api_spend():
    """Tokens from a self-hosted server (kind: local, or an llm-server service) cost nothing and are
    counted apart; the reference cost shows what the paper's API would have charged."""
    with FaultServer(model="gpt-4o") as srv:
        api = LLMClient.from_config(_llm(), endpoints=[Endpoint(base_url=srv.base_url, model="gpt-4o")])
        local = LLMClient.from_config(_llm(), endpoints=[Endpoint(base_url=srv.base_url, model="gpt-4o",
                                                                  kind="local")])
        api.run_batch(_reqs(3))
        local.run_batch(_reqs(3, "q"))
    a, b = api.usage_totals(), local.usage_totals()
    assert a["cost_usd"] > 0 and a["api_prompt_tokens"] == a["prompt_tokens"] and a["local_prompt_tokens"] == 0
    assert b["cost_usd"] == 0 and b["local_prompt_tokens"] == b["prompt_tokens"] > 0 and b["api_prompt_tokens"] == 0
    assert b["reference_cost_usd"] > 0
    from skymath.synth.accounting import split_spend

    s = split_spend({"usage": b})
    assert s["api"]["cost_usd"] == 0 and s["local"]["prompt_tokens"] == b["prompt_tokens"]
    # a local eval backend reports its tokens at the top of its marker, without `usage`
    assert split_spend({"prompt_tokens": 5, "completion_tokens": 7})["local"] == {"prompt_tokens": 5,
                                                                                  "completion_tokens": 7}


@pytest.mark.parametrize("mode", ["retrying", "in-flight"])
def test_a_stop_ends_a_batch_within_its_grace_without_a_verdict(mode):
    """A time-limit signal must not wait out retries (max_retries x back-off) or a slow request's
    timeout: no new attempt after the stop, in-flight requests get stop_grace_s, the rest come
    back as failures marked stopped (a rerun retries them), never as answers."""
    if mode == "retrying":
        srv = FaultServer(rules=[Rule("problem", ["500"], repeat_last=True)])
        llm = _llm(max_retries=50, backoff_base_s=5.0, backoff_max_s=5.0)
    else:
        srv = FaultServer(latency_s=60.0)
        llm = _llm(timeout_s=120.0)
    with srv:
        client = LLMClient.from_config(llm, endpoints=[Endpoint(base_url=srv.base_url)])
        t0 = time.monotonic()
        client.stop = lambda: time.monotonic() - t0 > 1.0
        client.stop_grace_s = 0.5
        res = client.run_batch(_reqs(3))
        elapsed = time.monotonic() - t0
    assert elapsed < 15, elapsed  # not 50 x 5 s of retries, not a 60 s request
    assert [r.key for r in res] == ["p0", "p1", "p2"]
    assert all(not r.ok and r.text is None and r.error.startswith("stopped") for r in res), res
