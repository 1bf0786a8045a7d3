"""Parsing what providers say about rate limits: `Retry-After` / `retry-after-ms` and the
durations of `x-ratelimit-reset-*`. The budget itself is skymath.synth.ratebudget."""

from __future__ import annotations

import re
import time

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
