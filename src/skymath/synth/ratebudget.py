"""One rate budget per API key for the whole run: every shard of every stage, on any executor.

An API key's RPM/TPM belong to the key, not to a process: 64 array tasks that each believe they
own `llm.rpm` offer 64x the rate. So the budget lives in one small file in the run directory
(`<run>/ratelimit/<model>-<key fingerprint>.budget`), shared through the filesystem that every
shard already writes its outputs to, and updated under an fcntl (POSIX) lock: that works between
processes on one node and across nodes on NFS with lockd.

The file holds a GCRA schedule (generic cell rate algorithm: the "theoretical arrival time" of
the next request and of the next token, plus a pause). A shard *reserves* send times for the
requests it has waiting, in one locked read-modify-write per batch: every request gets a slot at
least 60/(rpm x headroom) s after the previous one of the whole run (and likewise for tokens),
so the run as a whole paces at `headroom` x the limit with no bursts, whatever the number of
shards. Reservations reach at most `horizon_s` into the future, which bounds both the slots lost
when a shard dies and the delay before a pause reaches everyone. A 429 (with its Retry-After)
pauses the shared schedule: every shard's next slot comes after the pause.

If the filesystem refuses locks (NFS mounted `nolock`), each shard falls back to a fair share:
the limits divided by the number of shards that can run at once (the array throttle).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import random
import struct
import threading
import time
from pathlib import Path

log = logging.getLogger("skymath.synth.ratebudget")

_MAGIC = 0x534B5242  # "SKRB"
_FMT = "<Idddd"  # magic, tat_requests, tat_tokens, paused_until, chars per token learned by the run
_SIZE = struct.calcsize(_FMT)


def budget_path(rate_dir: Path, model: str, api_key: str) -> Path:
    """One file per (key, model): providers limit each model of a key separately. The key is
    represented by a salted 48-bit fingerprint, never by its value."""
    fp = hashlib.sha256(f"skymath-rate-budget|{api_key}".encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in model)[:80]
    return Path(rate_dir) / f"{safe}-{fp}.budget"


class LocksUnavailable(OSError):
    """The filesystem does not support fcntl locks (e.g. NFS mounted with `nolock`)."""


class SharedSchedule:
    """The GCRA state in one file; `reserve` and `pause` are locked read-modify-writes."""

    def __init__(self, path: Path, rpm: float | None, tpm: float | None, headroom: float = 0.95,
                 horizon_s: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.req_interval = 60.0 / (rpm * headroom) if rpm else 0.0  # seconds per request
        self.tok_interval = 60.0 / (tpm * headroom) if tpm else 0.0  # seconds per token
        self.horizon_s = horizon_s
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._mutex = threading.Lock()  # POSIX locks are per process: threads need their own
        self.lock_ops = 0
        self._cpt = 0.0  # the run's learned characters per token, as last read (0: none yet)
        self._publish = 0.0  # this process's value, written at the next reserve
        try:
            with self._locked():
                pass
        except OSError as e:
            os.close(self._fd)
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise LocksUnavailable(e.errno, f"{self.path}: no fcntl locks on this filesystem") from None
            raise

    @contextlib.contextmanager
    def _locked(self):
        with self._mutex:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            self.lock_ops += 1
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _read(self) -> list[float]:
        raw = os.pread(self._fd, _SIZE, 0)
        if len(raw) == _SIZE:
            magic, tat_r, tat_t, paused, cpt = struct.unpack(_FMT, raw)
            if magic == _MAGIC:
                self._cpt = cpt
                return [tat_r, tat_t, paused]
        self._cpt = 0.0
        return [0.0, 0.0, 0.0]

    def _write(self, tat_r: float, tat_t: float, paused: float) -> None:
        os.pwrite(self._fd, struct.pack(_FMT, _MAGIC, tat_r, tat_t, paused, self._cpt), 0)

    def share_ratio(self, learned: float) -> float:
        """Publish this shard's learned characters-per-token (when it has one) and return the
        run's: a new shard starts from what earlier shards measured (read at the next reserve)."""
        if learned > 0:
            self._publish = learned
        return self._cpt

    def reserve(self, token_costs: list[float], now: float | None = None) -> tuple[list[float], float]:
        """Send times (wall clock) for as many of the requests as fit within the horizon, in order,
        and when to try again for the rest."""
        with self._locked():
            now = time.time() if now is None else now
            tat_r, tat_t, paused = self._read()
            if self._publish > 0:
                self._cpt = self._publish if self._cpt <= 0 else 0.5 * (self._cpt + self._publish)
                self._publish = 0.0
            limit = now + self.horizon_s
            times: list[float] = []
            for cost in token_costs:
                t = max(now, tat_r, tat_t, paused)
                if t > limit and times:
                    break
                if t > limit:  # nothing fits: come back when the first slot is within the horizon
                    break
                times.append(t)
                tat_r = t + self.req_interval
                tat_t = max(tat_t, t) + cost * self.tok_interval
            self._write(tat_r, tat_t, paused)
            return times, max(tat_r, tat_t, paused) - self.horizon_s

    def pause(self, until: float) -> None:
        """No request of the run may be sent before `until` (wall clock): a 429 with Retry-After."""
        with self._locked():
            tat_r, tat_t, paused = self._read()
            self._write(max(tat_r, until), max(tat_t, until), max(paused, until))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class LocalSchedule:
    """The same schedule in memory: one process (rate_share: process) or the no-lock fallback."""

    def __init__(self, rpm: float | None, tpm: float | None, headroom: float = 0.95, horizon_s: float = 1.0,
                 share: int = 1) -> None:
        self.req_interval = 60.0 * share / (rpm * headroom) if rpm else 0.0
        self.tok_interval = 60.0 * share / (tpm * headroom) if tpm else 0.0
        self.horizon_s = horizon_s
        self.state = [0.0, 0.0, 0.0]
        self.lock_ops = 0
        self._mutex = threading.Lock()

    def reserve(self, token_costs: list[float], now: float | None = None) -> tuple[list[float], float]:
        with self._mutex:
            now = time.time() if now is None else now
            tat_r, tat_t, paused = self.state
            limit = now + self.horizon_s
            times: list[float] = []
            for cost in token_costs:
                t = max(now, tat_r, tat_t, paused)
                if t > limit and times:
                    break
                if t > limit:
                    break
                times.append(t)
                tat_r = t + self.req_interval
                tat_t = max(tat_t, t) + cost * self.tok_interval
            self.state = [tat_r, tat_t, paused]
            return times, max(tat_r, tat_t, paused) - self.horizon_s

    def share_ratio(self, learned: float) -> float:
        return 0.0

    def pause(self, until: float) -> None:
        with self._mutex:
            tat_r, tat_t, paused = self.state
            self.state = [max(tat_r, until), max(tat_t, until), max(paused, until)]

    def close(self) -> None:
        pass


_SHARED: dict[str, SharedSchedule] = {}
_SHARED_LOCK = threading.Lock()


def shared_schedule(path: Path, rpm: float | None, tpm: float | None, headroom: float,
                    horizon_s: float = 1.0) -> SharedSchedule:
    """One SharedSchedule per file per process (several clients of one shard share it)."""
    key = f"{Path(path).resolve()}|{rpm}|{tpm}|{headroom}|{horizon_s}"
    with _SHARED_LOCK:
        sched = _SHARED.get(key)
        if sched is None:
            sched = _SHARED[key] = SharedSchedule(path, rpm, tpm, headroom, horizon_s)
        return sched


class RateBudget:
    """What the client awaits before each request: a send slot of the (shared) schedule.

    Requests waiting in this process are batched into one reservation, so the file is locked
    once per batch, not once per request. Token costs are estimated before sending (characters
    / learned characters-per-token + max_tokens, as providers count them) and the ratio is
    learned from the usage the server reports."""

    def __init__(self, schedule: SharedSchedule | LocalSchedule, max_batch: int = 64,
                 max_lateness_s: float = 0.2) -> None:
        self.schedule = schedule
        self.max_batch = max_batch
        self.max_lateness_s = max_lateness_s
        self.missed = 0  # slots given up because the process was too late to use them
        self.chars_per_token = 3.0  # conservative until the server's counts (or the run's) teach us
        self._learned = 0
        self._waiting: list[tuple[float, asyncio.Future]] = []
        self._pump: asyncio.Task | None = None
        self.waited_s = 0.0

    def estimate_tokens(self, prompt_chars: int, max_tokens: int) -> float:
        return prompt_chars / self.chars_per_token + max_tokens

    def learn(self, prompt_chars: int, prompt_tokens: int) -> None:
        if prompt_tokens > 0 and prompt_chars > 0:
            ratio = prompt_chars / prompt_tokens
            self.chars_per_token = ratio if self._learned == 0 else 0.9 * self.chars_per_token + 0.1 * ratio
            self._learned += 1

    async def acquire(self, tokens: float) -> None:
        """Wait for this request's slot. A slot missed by more than `max_lateness_s` (the event
        loop stalled: CPU contention, GC, a slow import) is given up and a fresh one reserved, so
        late requests never reach the server bunched together with the on-time ones."""
        loop = asyncio.get_running_loop()
        while True:
            fut: asyncio.Future = loop.create_future()
            self._waiting.append((tokens, fut))
            if self._pump is None or self._pump.done():
                self._pump = loop.create_task(self._run_pump())
            at = await fut
            delay = at - time.time()
            if delay > 0:
                self.waited_s += delay
                await asyncio.sleep(delay)
            if time.time() - at <= self.max_lateness_s:
                return
            self.missed += 1

    async def _run_pump(self) -> None:
        while self._waiting:
            batch = self._waiting[:self.max_batch]
            run_ratio = self.schedule.share_ratio(self.chars_per_token if self._learned >= 5 else 0.0)
            if self._learned < 5 and run_ratio > 0:
                self.chars_per_token = run_ratio  # what the run's earlier shards measured
            try:
                times, retry_at = self.schedule.reserve([c for c, _ in batch])
            except OSError as e:  # a flaky shared filesystem: wait and try again, never fail a request
                log.warning("rate budget %s: %s; retrying", getattr(self.schedule, "path", ""), e)
                await asyncio.sleep(0.5 + random.random())
                continue
            for (_, fut), t in zip(batch, times, strict=False):
                if not fut.done():
                    fut.set_result(t)
            del self._waiting[:len(times)]
            if self._waiting:
                # the horizon is full: come back when a slot opens (jittered, so shards do not stampede)
                await asyncio.sleep(max(0.0, retry_at - time.time()) + random.uniform(0, 0.05))

    def pause(self, seconds: float) -> None:
        """A 429 said wait `seconds`: the whole run's schedule waits."""
        try:
            self.schedule.pause(time.time() + seconds)
        except OSError as e:
            log.warning("rate budget pause failed: %s", e)
