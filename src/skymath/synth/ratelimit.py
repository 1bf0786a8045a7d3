"""Requests-per-minute and tokens-per-minute limits: async token buckets, tightened by the
`x-ratelimit-*` headers a provider sends back."""

from __future__ import annotations

import asyncio
import re
import time


class TokenBucket:
    """Capacity `per_minute`, refilled continuously; `acquire(n)` waits until n tokens are there."""

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, n: float = 1.0) -> None:
        n = min(float(n), self.capacity)  # one oversized request must still pass eventually
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self._refill()
                if self.tokens >= n:
                    self.tokens -= n
                    return
                await asyncio.sleep((n - self.tokens) / self.rate)

    def observe(self, remaining: float | None, reset_s: float | None) -> None:
        """The server says `remaining` are left until `reset_s`: never believe we have more."""
        if remaining is None:
            return
        self._refill()
        self.tokens = min(self.tokens, max(0.0, remaining))
        if remaining <= 0 and reset_s:
            self.paused_until = max(self.paused_until, time.monotonic() + reset_s)


_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """OpenAI reset values: '1s', '6m0s', '20ms', '1h2m3.5s', or plain seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    total, found = 0.0, False
    for num, unit in _DUR_RE.findall(value):
        found = True
        total += float(num) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    return total if found else None


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` / `retry-after` (seconds or an HTTP date); any size is honoured."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _float(headers, name: str) -> float | None:
    v = headers.get(name)
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def observe_headers(headers, rpm: TokenBucket | None, tpm: TokenBucket | None) -> None:
    if headers is None:
        return
    if rpm is not None:
        rpm.observe(_float(headers, "x-ratelimit-remaining-requests"),
                    parse_duration(headers.get("x-ratelimit-reset-requests")))
    if tpm is not None:
        tpm.observe(_float(headers, "x-ratelimit-remaining-tokens"),
                    parse_duration(headers.get("x-ratelimit-reset-tokens")))
