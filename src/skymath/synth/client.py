"""A resumable OpenAI-compatible chat client for millions of synthesis requests.

On the official `openai` async client (its own retries off): a concurrency limit, the API key's
RPM/TPM budget shared by every shard of the run (skymath.synth.ratebudget; a 429 or exhausted
`x-ratelimit-*` headers pause every shard), retries with exponential backoff and jitter on
429/5xx/timeouts/connection errors/malformed or empty answers (`Retry-After` is honoured whatever
its size), a response cache so a rerun never pays twice, several endpoints round-robin (one that
refuses connections is skipped for a while), and usage/cost accounting (API spend and local
generation apart).

    client = LLMClient.from_config(cfg.llm, cache_dir=work_dir)
    results = client.run_batch([ChatRequest("k1", [{"role": "user", "content": "1+1?"}])])

Inside an event loop use `async with client.session(): await client.achat(req)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from skymath.config.llm import Endpoint, LLMConfig
from skymath.errors import UserError
from skymath.synth.accounting import Usage, register
from skymath.synth.cache import ResponseCache, cache_key
from skymath.synth.ratebudget import (
    LocalSchedule,
    LocksUnavailable,
    RateBudget,
    budget_path,
    shared_schedule,
)
from skymath.synth.ratelimit import parse_duration, parse_retry_after
from skymath.synth.secrets import load_api_key, redact

log = logging.getLogger("skymath.synth.client")

OPENAI_BASE_URL = "https://api.openai.com/v1"
CACHE_FILE = "llm-cache.sqlite"
STOPPED = "stopped: the shard was asked to stop (time limit / cancel) before this request finished"


@dataclass
class ChatRequest:
    key: str  # a label for logs and failure lists (the cache key is derived from the content)
    messages: list[dict]
    temperature: float | None = None  # None: llm.temperature
    max_tokens: int | None = None  # None: llm.max_tokens
    sample_index: int = 0  # distinguishes k samples of the same prompt (cache key, seed)


@dataclass
class ChatResult:
    key: str
    text: str | None
    error: str | None
    attempts: int
    usage: dict = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    cached: bool = False
    finish_reason: str | None = None
    model: str | None = None
    seed: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Transient(Exception):
    """A failure worth retrying; `retry_after` (s) when the server said so; `down` marks the endpoint."""

    def __init__(self, msg: str, retry_after: float | None = None, down: bool = False) -> None:
        super().__init__(msg)
        self.retry_after = retry_after
        self.down = down


class _Permanent(Exception):
    """A failure that retrying cannot fix (400, 401, 404, ...)."""


@dataclass
class _Endpoint:
    base_url: str
    model: str
    local: bool = False  # a self-hosted server: its tokens are local generation, not API spend
    down_until: float = 0.0
    failures_in_row: int = 0
    client: Any = None


def _is_openai(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host.endswith("openai.com") or host.endswith("azure.com")


class LLMClient:
    def __init__(self, llm: LLMConfig, endpoints: list[Endpoint], cache: ResponseCache | None = None,
                 refresh: Callable[[], list[Endpoint]] | None = None, refresh_s: float = 15.0,
                 rate_dir: Path | None = None, fair_share: int = 1) -> None:
        if not endpoints:
            raise UserError("llm.endpoints: no endpoint to send requests to")
        self.llm = llm
        self._endpoints = [_Endpoint(e.base_url.rstrip("/"), e.model or llm.model, e.kind == "local")
                           for e in endpoints]
        self._api_key = load_api_key(llm.api_key_env, llm.api_key_file,
                                     needs_key=any(_is_openai(e.base_url) for e in self._endpoints))
        self.cache = cache
        self.usage = Usage()
        register(self.usage, llm)  # the worker puts every client's usage into the shard's marker
        self._rate_dir = Path(llm.rate_dir) if llm.rate_dir is not None else rate_dir
        self._fair_share = max(1, fair_share)
        self._budget: RateBudget | None = None
        self._refresh = refresh
        self._refresh_s = refresh_s
        self._last_refresh = time.monotonic()
        self._rr = 0
        self._sem: asyncio.Semaphore | None = None
        self._groups: dict[str, asyncio.Future] = {}  # llm.n > 1: in-flight/answered requests of n samples
        # a stage's stop flag (SIGTERM/USR2): no new attempt or back-off after it, and a batch gives
        # its in-flight requests stop_grace_s before it ends (a time-limit signal lead is minutes,
        # a request's retries could take longer than that)
        self.stop: Callable[[], bool] = lambda: False
        self.stop_grace_s = 20.0

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, llm: LLMConfig, cache_dir: Path | None = None,
                    endpoints: list[Endpoint] | None = None, rate_dir: Path | None = None) -> LLMClient:
        """Endpoints: the given ones, else `llm.endpoints`, else the OpenAI API. `rate_dir` (or
        llm.rate_dir): where the shared rate budget lives; without one, the budget is this process's.

        With `llm.service` set, use `for_context(ctx)` (the endpoints live in the run directory)."""
        eps = list(endpoints or llm.endpoints)
        if not eps:
            if llm.service:
                raise UserError(f"llm.service: {llm.service!r} publishes its endpoints in the run directory; "
                                "build the client with LLMClient.for_context(ctx)")
            eps = [Endpoint(base_url=OPENAI_BASE_URL)]
        cache = ResponseCache(Path(cache_dir) / CACHE_FILE) if (cache_dir is not None and llm.cache) else None
        return cls(llm, eps, cache, rate_dir=rate_dir)

    @classmethod
    def for_context(cls, ctx, cache_dir: Path | None = None, llm: LLMConfig | None = None) -> LLMClient:
        """For a stage shard: the run's shared rate budget (`<run>/ratelimit`); with `llm.service`,
        wait for the service's endpoints and keep refreshing."""
        llm = llm or ctx.config.llm
        rate_dir = ctx.run.root / "ratelimit"
        share = runnable_shards(ctx)
        if not llm.service:
            c = cls.from_config(llm, cache_dir=cache_dir, rate_dir=rate_dir)
            c._fair_share = share
            c.stop = ctx.stop_requested
            return c

        def discover(wait_s: float = 0.0) -> list[Endpoint]:
            found = ctx.service_endpoints(llm.service, wait_s=wait_s)
            return [Endpoint(base_url=e["base_url"], model=e.get("model") or llm.model, kind=e.get("kind", "local"))
                    for e in found]

        eps = discover(llm.endpoint_wait_s)
        if not eps:
            raise UserError(f"llm.service: no endpoint of service stage {llm.service!r} appeared within "
                            f"{llm.endpoint_wait_s:.0f} s (is the llm-server stage running? see its logs)")
        cache = ResponseCache(Path(cache_dir) / CACHE_FILE) if (cache_dir is not None and llm.cache) else None
        c = cls(llm, eps, cache, refresh=discover, rate_dir=rate_dir, fair_share=share)
        c.stop = ctx.stop_requested
        return c

    @property
    def endpoints(self) -> list[tuple[str, str]]:
        return [(e.base_url, e.model) for e in self._endpoints]

    def usage_totals(self) -> dict:
        return self.usage.totals(self.llm)

    # ---- session (event-loop bound resources) ----------------------------------------------------
    def _make_budget(self) -> RateBudget | None:
        """The key's rpm/tpm: shared by the run (a budget file), or this process's alone."""
        llm = self.llm
        if not (llm.rpm or llm.tpm):
            return None
        if llm.rate_share == "run" and self._rate_dir is not None:
            path = budget_path(self._rate_dir, llm.model, self._api_key)
            try:
                return RateBudget(shared_schedule(path, llm.rpm, llm.tpm, llm.rate_headroom))
            except LocksUnavailable as e:
                log.warning("%s: falling back to a fair share of the limits (1/%d: shards that can run "
                            "at once)", e, self._fair_share)
                return RateBudget(LocalSchedule(llm.rpm, llm.tpm, llm.rate_headroom, share=self._fair_share))
        if llm.rate_share == "run":
            log.info("no run directory: the rate budget is this process's alone")
        return RateBudget(LocalSchedule(llm.rpm, llm.tpm, llm.rate_headroom))

    @property
    def rate_budget(self) -> RateBudget | None:
        return self._budget

    @contextlib.asynccontextmanager
    async def session(self):
        self._sem = asyncio.Semaphore(self.llm.concurrency)
        self._groups = {}
        if self._budget is None:
            self._budget = self._make_budget()
        try:
            yield self
        finally:
            for ep in self._endpoints:
                if ep.client is not None:
                    with contextlib.suppress(Exception):
                        await ep.client.close()
                    ep.client = None
            self._sem = None

    def _client_for(self, ep: _Endpoint):
        if ep.client is None:
            from openai import AsyncOpenAI

            ep.client = AsyncOpenAI(base_url=ep.base_url, api_key=self._api_key, max_retries=0,
                                    timeout=self.llm.timeout_s)
        return ep.client

    def _maybe_refresh(self) -> None:
        if self._refresh is None or time.monotonic() - self._last_refresh < self._refresh_s:
            return
        self._last_refresh = time.monotonic()
        try:
            fresh = self._refresh()
        except Exception as e:  # noqa: BLE001 - discovery is best effort; keep the known endpoints
            log.warning("endpoint refresh failed: %s", e)
            return
        known = {e.base_url for e in self._endpoints}
        for e in fresh:
            if e.base_url.rstrip("/") not in known:
                self._endpoints.append(_Endpoint(e.base_url.rstrip("/"), e.model or self.llm.model))
                log.info("new endpoint %s", e.base_url)

    def _pick(self) -> tuple[_Endpoint, float]:
        """Round-robin over endpoints that are up; if all are down, the one back soonest (and the wait)."""
        self._maybe_refresh()
        now = time.monotonic()
        n = len(self._endpoints)
        for i in range(n):
            ep = self._endpoints[(self._rr + i) % n]
            if ep.down_until <= now:
                self._rr = (self._rr + i + 1) % n
                return ep, 0.0
        ep = min(self._endpoints, key=lambda e: e.down_until)
        return ep, max(0.0, ep.down_until - now)

    # ---- one request ------------------------------------------------------------------------------
    def _seed_for(self, key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF

    async def achat(self, req: ChatRequest) -> ChatResult:
        """Send one request (or answer it from the cache); never raises for API failures."""
        if self._sem is None:
            raise RuntimeError("LLMClient.achat needs `async with client.session():`")
        temperature = self.llm.temperature if req.temperature is None else req.temperature
        max_tokens = self.llm.max_tokens if req.max_tokens is None else req.max_tokens
        # keyed (and seeded) by the model the config asks for, not by an endpoint's served name,
        # which for a self-hosted server can hold a run-specific path: reruns and other runs of the
        # same config then hit the cache and draw the same samples
        model = self.llm.model
        ckey = cache_key(model, req.messages, temperature, max_tokens, req.sample_index)
        seed = self._seed_for(ckey) if self.llm.send_seed else None
        if self.llm.n > 1 and self._group_key(req, temperature, max_tokens) in self._groups:
            res = await self._from_group(req, temperature, max_tokens)  # a sibling's request has it
            if res is not None:
                return res
        if self.cache is not None:
            hit = self.cache.get(ckey)
            if hit is not None:
                self.usage.cached += 1
                return ChatResult(req.key, hit["text"], None, 0, hit.get("usage") or {}, True,
                                  hit.get("finish_reason"), hit.get("model"), seed)
        if self.llm.n > 1:
            res = await self._from_group(req, temperature, max_tokens)
            if res is not None:
                return res
        choices, usage, served, attempts, last_error = await self._request(req.messages, temperature,
                                                                            max_tokens, seed)
        if choices is None:
            log.warning("request %s failed after %d attempt(s): %s", req.key, attempts, last_error)
            return ChatResult(req.key, None, last_error, attempts, {"prompt_tokens": 0, "completion_tokens": 0},
                              False, None, None, seed)
        text, finish = choices[0]
        if self.cache is not None:
            self.cache.put(ckey, {"text": text, "usage": usage, "finish_reason": finish, "model": served})
        return ChatResult(req.key, text, None, attempts, usage, False, finish, served, seed)

    def _group_key(self, req: ChatRequest, temperature: float, max_tokens: int) -> str:
        first = req.sample_index - req.sample_index % self.llm.n
        return cache_key(self.llm.model, req.messages, temperature, max_tokens, first) + f"/n={self.llm.n}"

    async def _from_group(self, req: ChatRequest, temperature: float, max_tokens: int) -> ChatResult | None:
        """Sample `req.sample_index` out of ONE request drawing `llm.n` samples of this prompt (`n`).

        The first sibling (sample index in the same j // n group) to arrive sends it and caches every
        choice under its own sample's key; the others wait for it. The request is counted once: its
        usage goes to the sibling that sent it, the others get zero usage (not "cached": nothing was
        reused from an earlier run). None when the reply holds no usable choice for this sample (a
        server that ignores `n` returns one): the caller then asks for it alone."""
        n = self.llm.n
        first = req.sample_index - req.sample_index % n
        gkey = self._group_key(req, temperature, max_tokens)
        seed = self._seed_for(gkey) if self.llm.send_seed else None
        fut = self._groups.get(gkey)
        sender = fut is None
        if fut is None:
            fut = self._groups[gkey] = asyncio.get_running_loop().create_future()
            try:
                got = await self._request(req.messages, temperature, max_tokens, seed, n)
            except BaseException:
                self._groups.pop(gkey, None)
                fut.cancel()
                raise
            fut.set_result(got)
            choices, usage, served, _, _ = got
            if choices is not None and self.cache is not None:
                for j, (text, finish) in enumerate(choices[:n]):
                    if text and text.strip():
                        key = cache_key(self.llm.model, req.messages, temperature, max_tokens, first + j)
                        self.cache.put(key, {"text": text, "usage": usage if first + j == req.sample_index else
                                             {"prompt_tokens": 0, "completion_tokens": 0},
                                             "finish_reason": finish, "model": served})
        choices, usage, served, attempts, last_error = await asyncio.shield(fut)
        zero = {"prompt_tokens": 0, "completion_tokens": 0}
        if choices is None:
            if sender:
                log.warning("request %s (n=%d) failed after %d attempt(s): %s", req.key, n, attempts, last_error)
            return ChatResult(req.key, None, last_error, attempts if sender else 0, zero, False, None, None, seed)
        j = req.sample_index - first
        if j >= len(choices) or not (choices[j][0] or "").strip():
            return None
        text, finish = choices[j]
        return ChatResult(req.key, text, None, attempts if sender else 0, usage if sender else zero, False,
                          finish, served, seed)

    async def _request(self, messages: list[dict], temperature: float, max_tokens: int, seed: int | None,
                       n: int = 1) -> tuple[list[tuple[str | None, str | None]] | None, dict, str | None, int, str]:
        """Send one request with retries: (choices or None when it failed for good, usage, served model,
        attempts, last error)."""
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        budget = self._budget
        attempts = 0
        last_error = "not sent"
        async with self._sem:
            while attempts <= self.llm.max_retries:
                if self.stop():
                    last_error = STOPPED
                    break
                ep, wait = self._pick()
                if wait > 0:
                    await asyncio.sleep(wait)
                if budget is not None:
                    self._client_for(ep)  # build (and import) the HTTP client before taking a slot
                    await budget.acquire(budget.estimate_tokens(prompt_chars, max_tokens * n))
                attempts += 1
                self.usage.requests += 1
                try:
                    choices, usage, served = await self._send(ep, messages, temperature, max_tokens, seed, n)
                except _Permanent as e:
                    last_error = redact(str(e), self._api_key)
                    break
                except _Transient as e:
                    last_error = redact(str(e), self._api_key)
                    if e.down and len(self._endpoints) > 1:
                        ep.failures_in_row += 1
                        ep.down_until = time.monotonic() + self.llm.endpoint_down_s * min(8, ep.failures_in_row)
                        if any(o.down_until <= time.monotonic() for o in self._endpoints if o is not ep):
                            continue  # another endpoint is up: retry there at once
                    if attempts > self.llm.max_retries:
                        break
                    await self._sleep_unless_stopped(self._backoff(attempts, e.retry_after))
                    continue
                ep.failures_in_row = 0
                self.usage.succeeded += 1
                self.usage.add_tokens(served or ep.model, usage["prompt_tokens"], usage["completion_tokens"], ep.local)
                if budget is not None:
                    budget.learn(prompt_chars, usage["prompt_tokens"])
                return choices, usage, served, attempts, ""
        self.usage.failures += 1
        return None, {"prompt_tokens": 0, "completion_tokens": 0}, None, attempts, last_error

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop() and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(0.5, left))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + random.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
        base = min(self.llm.backoff_max_s, self.llm.backoff_base_s * (2 ** (attempt - 1)))
        return random.uniform(base / 2, base)  # "equal jitter": spread retries, keep the growth

    async def _send(self, ep: _Endpoint, messages: list[dict], temperature: float, max_tokens: int,
                    seed: int | None, n: int = 1) -> tuple[list[tuple[str | None, str | None]], dict, str | None]:
        """One HTTP request: ([(text, finish_reason)] per choice, usage, served model)."""
        import openai

        client = self._client_for(ep)
        kw: dict[str, Any] = {"model": ep.model, "messages": messages, "temperature": temperature,
                              "max_tokens": max_tokens}
        if seed is not None:
            kw["seed"] = seed
        if n > 1:
            kw["n"] = n
        try:
            raw = await client.chat.completions.with_raw_response.create(**kw)
        except openai.APITimeoutError:
            raise _Transient(f"timeout after {self.llm.timeout_s:g} s") from None
        except openai.APIConnectionError as e:
            raise _Transient(f"connection error: {e}", down=True) from None
        except openai.APIStatusError as e:
            status = e.status_code
            body = str(getattr(e, "message", "") or "")[:300]
            headers = getattr(e.response, "headers", None)
            if status == 429:
                self.usage.rate_limited += 1
                retry_after = parse_retry_after(headers)
                if self._budget is not None:  # every shard of the run waits, not just this request
                    self._budget.pause(retry_after if retry_after is not None else _reset_s(headers, 1.0))
                raise _Transient(f"HTTP 429 rate limited: {body}", retry_after=retry_after) from None
            if status >= 500 or status in (408, 409):
                raise _Transient(f"HTTP {status}: {body}", retry_after=parse_retry_after(headers)) from None
            raise _Permanent(f"HTTP {status}: {body}") from None
        except openai.APIResponseValidationError as e:
            raise _Transient(f"malformed response: {e}") from None
        if self._budget is not None:
            _pause_if_exhausted(raw.headers, self._budget)
        try:
            completion = raw.parse()
            by_index = sorted(completion.choices, key=lambda c: c.index or 0)
            choices = [(c.message.content, c.finish_reason) for c in by_index]
            text = choices[0][0]
        except Exception as e:  # noqa: BLE001 - junk bodies from proxies / overloaded servers
            raise _Transient(f"malformed response: {type(e).__name__}: {str(e)[:200]}") from None
        if not text or not text.strip():
            raise _Transient("empty content")
        u = getattr(completion, "usage", None)
        usage = {"prompt_tokens": int(getattr(u, "prompt_tokens", 0) or 0),
                 "completion_tokens": int(getattr(u, "completion_tokens", 0) or 0)}
        return choices, usage, getattr(completion, "model", None)

    # ---- batch (sync) ---------------------------------------------------------------------------------
    async def arun_batch(self, requests: list[ChatRequest],
                         progress: Callable[[ChatResult], None] | None = None) -> list[ChatResult]:
        async with self.session():
            async def one(r: ChatRequest) -> ChatResult:
                res = await self.achat(r)
                if progress is not None:
                    progress(res)
                return res

            tasks = [asyncio.create_task(one(r)) for r in requests]
            everything = asyncio.gather(*tasks)
            stopped = False
            while not everything.done():
                await asyncio.wait([everything], timeout=0.5)
                if self.stop() and not everything.done():
                    await asyncio.wait([everything], timeout=self.stop_grace_s)
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    stopped = True
                    break
            error = everything.exception() if everything.done() and not everything.cancelled() else None
            if error is not None and not stopped:
                for t in tasks:
                    t.cancel()
                raise error
            return [t.result() if not t.cancelled() else ChatResult(r.key, None, STOPPED, 0)
                    for r, t in zip(requests, tasks, strict=True)]

    def run_batch(self, requests: list[ChatRequest],
                  progress: Callable[[ChatResult], None] | None = None) -> list[ChatResult]:
        """Send every request (concurrently, within the limits); results in request order."""
        return asyncio.run(self.arun_batch(requests, progress))

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _reset_s(headers, default: float) -> float:
    """Seconds until the exhausted limit resets, from `x-ratelimit-reset-*` (else `default`)."""
    if headers is None:
        return default
    resets = [parse_duration(headers.get(h)) for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    known = [r for r in resets if r is not None]
    return max(known) if known else default


def _pause_if_exhausted(headers, budget: RateBudget) -> None:
    """The provider says a limit is used up (another user of the key, or our estimate was low):
    pause the run's schedule until it resets. Two header reads per response."""
    for rem, reset in (("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
                       ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")):
        v = headers.get(rem)
        if v is not None and v.strip() in ("0", "0.0"):
            budget.pause(parse_duration(headers.get(reset)) or 1.0)


def runnable_shards(ctx) -> int:
    """How many shards of this stage may run at once (its array throttle, else all of them): the
    fair-share divisor when the budget file cannot be locked. Conservative on purpose (the frozen
    config does not say which executor runs it, and a fallback must never exceed the key's limit)."""
    spec = ctx.spec
    n = spec.num_shards
    if spec.resources.array_throttle:
        n = min(n, spec.resources.array_throttle)
    return max(1, n)
