"""A test-owned OpenAI-compatible server on 127.0.0.1 that injects faults on a schedule.

No model: answers come from a `responder(body) -> str`. Faults, per request:
  "ok"        200 with a chat completion
  "429"       429 with `Retry-After: <retry_after>`
  "500"       500 with a JSON error
  "400"       400 (a permanent error)
  "slow"      sleeps `slow_s` (longer than the client's timeout), then answers
  "malformed" 200 with a body that is not JSON
  "empty"     200 with empty message content
  "drop"      closes the connection without answering
  "401"       401 whose message echoes the bearer token (as some providers do: tests redaction)

Which fault a request gets: the first `Rule` whose `match` substring occurs in the request body
consumes its next action (`repeat_last=True` keeps the last one forever: a permanent failure);
otherwise the global `schedule` list is consumed in arrival order; then "ok".

Rate limits like a provider's (`rpm=`, `tpm=`): token buckets refilled continuously, holding
`burst_s` seconds of each limit; a request costs 1 request and its prompt tokens (whitespace
words) + `max_tokens` (as OpenAI counts TPM). Over the limit: 429 with `Retry-After` and
`x-ratelimit-*` headers, counted in `rate_limited`; accepted requests are counted in
`accepted` / `accepted_tokens` with their arrival times (`GET /stats` returns all counters).

    with FaultServer(schedule=["429", "500"]) as srv:
        LLMClient.from_config(llm, endpoints=[Endpoint(base_url=srv.base_url, model=srv.model)])
        srv.total, srv.by_action["ok"], srv.ok_bodies, srv.usage_served

Runs on its own asyncio loop in a thread (`start()`), or as a subprocess:
`python tests/support/fault_server.py --latency 0.2` prints `READY <base_url>` and serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rule:
    match: str
    actions: list[str]
    repeat_last: bool = False
    used: int = 0

    def next_action(self) -> str:
        if self.used < len(self.actions):
            a = self.actions[self.used]
        elif self.repeat_last and self.actions:
            a = self.actions[-1]
        else:
            a = "ok"
        self.used += 1
        return a


def default_responder(body: dict) -> str:
    last = body["messages"][-1]["content"] if body.get("messages") else ""
    h = hashlib.sha256(last.encode()).hexdigest()[:8]
    return f"Working on request {h}.\nStep 1: compute.\nThe answer is {int(h, 16) % 1000}"


def body_key(body: dict) -> str:
    """Identity of a request's content (model, messages, sampling): what the client's cache keys on."""
    blob = json.dumps({k: body.get(k) for k in ("model", "messages", "temperature", "max_tokens", "seed")},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def count_tokens(text: str) -> int:
    return len(text.split())


@dataclass
class FaultServer:
    schedule: list[str] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    responder: Callable[[dict], str] = default_responder
    latency_s: float = 0.0
    slow_s: float = 5.0
    retry_after: float = 1.0
    model: str = "fault-model"
    host: str = "127.0.0.1"
    port: int = 0
    # runs in a thread before the answer; may return an action that replaces the scheduled one
    on_request: Callable[[int, dict], str | None] | None = None
    rpm: float | None = None
    tpm: float | None = None
    burst_s: float = 1.0

    def __post_init__(self) -> None:
        self.total = 0
        self.by_action: Counter[str] = Counter()
        self.ok_bodies: Counter[str] = Counter()  # body_key -> number of 200 answers with content
        self.usage_served = {"prompt_tokens": 0, "completion_tokens": 0}
        self.log: list[dict[str, Any]] = []
        self.auth_seen: set[str] = set()  # Authorization headers received
        self._schedule = list(self.schedule)
        self._lock = threading.Lock()
        self.rate_limited = 0  # 429s the limiter answered
        self.accepted = 0  # chat requests the limiter let through
        self.accepted_tokens = 0.0
        self.accepted_first = self.accepted_last = 0.0
        self.accepted_log: list[tuple[float, float]] = []  # (arrival time, token cost) of each accepted request
        now = time.monotonic()
        self._buckets = {"req": [self.rpm / 60 * self.burst_s if self.rpm else 0.0, now],
                         "tok": [self.tpm / 60 * self.burst_s if self.tpm else 0.0, now]}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._serve_forever, name="fault-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _admit(self, body: dict) -> tuple[bool, float, dict[str, str]]:
        """The provider's limiter: (admitted, retry_after_s, headers)."""
        if not (self.rpm or self.tpm):
            return True, 0.0, {}
        cost = sum(count_tokens(str(m.get("content", ""))) for m in body.get("messages", [])) \
            + int(body.get("max_tokens") or 0)
        now = time.monotonic()
        need = {"req": 1.0, "tok": float(cost)}
        rates = {"req": (self.rpm or 0) / 60, "tok": (self.tpm or 0) / 60}
        with self._lock:
            wait = 0.0
            for k in ("req", "tok"):
                if not rates[k]:
                    continue
                b = self._buckets[k]
                cap = rates[k] * self.burst_s
                b[0] = min(cap, b[0] + (now - b[1]) * rates[k])
                b[1] = now
                if b[0] < need[k]:
                    wait = max(wait, (need[k] - b[0]) / rates[k])
            if wait > 0:
                self.rate_limited += 1
                return False, wait, {"Retry-After": f"{max(1, round(wait + 0.5))}",
                                     "retry-after-ms": f"{int(wait * 1000) + 1}",
                                     "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": f"{wait:.3f}s"}
            for k in ("req", "tok"):
                if rates[k]:
                    self._buckets[k][0] -= need[k]
            self.accepted += 1
            self.accepted_tokens += cost
            t = time.time()
            self.accepted_log.append((t, cost))
            self.accepted_first = self.accepted_first or t
            self.accepted_last = t
            return True, 0.0, {}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"total": self.total, "by_action": dict(self.by_action), "rate_limited": self.rate_limited,
                    "accepted": self.accepted, "accepted_tokens": self.accepted_tokens,
                    "accepted_first": self.accepted_first, "accepted_last": self.accepted_last,
                    "rpm": self.rpm, "tpm": self.tpm, "burst_s": self.burst_s,
                    "usage_served": dict(self.usage_served)}

    def set_schedule(self, actions: list[str]) -> None:
        with self._lock:
            self._schedule = list(actions)

    def reset_counters(self) -> None:
        with self._lock:
            self.total = 0
            self.by_action.clear()
            self.ok_bodies.clear()
            self.usage_served = {"prompt_tokens": 0, "completion_tokens": 0}
            self.log.clear()

    def _serve_forever(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port, backlog=1024))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    # ---- HTTP ------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0") or 0)
                raw = await reader.readexactly(n) if n else b""
                if "authorization" in headers:
                    self.auth_seen.add(headers["authorization"])
                keep = await self._route(method, path, raw, writer, headers.get("authorization", ""))
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def _write(writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None,
               ctype: str = "application/json") -> None:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error"}.get(status, "Status")
        hdr = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
               "Connection: keep-alive"]
        for k, v in (extra or {}).items():
            hdr.append(f"{k}: {v}")
        writer.write(("\r\n".join(hdr) + "\r\n\r\n").encode("latin-1") + body)

    def _choose(self, raw: bytes) -> str:
        text = raw.decode("utf-8", errors="replace")
        with self._lock:
            for rule in self.rules:
                if rule.match in text:
                    return rule.next_action()
            if self._schedule:
                return self._schedule.pop(0)
        return "ok"

    async def _route(self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter, auth: str = "") -> bool:
        if method == "GET" and path.rstrip("/") in ("/v1/models", "/models"):
            self._write(writer, 200, json.dumps({"object": "list", "data": [{"id": self.model, "object": "model"}]}).encode())
            await writer.drain()
            return True
        if method == "GET" and path == "/stats":
            self._write(writer, 200, json.dumps(self.stats()).encode())
            await writer.drain()
            return True
        if method == "GET" and path == "/health":
            self._write(writer, 200, b'{"status":"ok"}')
            await writer.drain()
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            self._write(writer, 404, b'{"error":{"message":"not found"}}')
            await writer.drain()
            return True
        body = json.loads(raw.decode("utf-8"))
        admitted, _wait, limit_headers = self._admit(body)
        if not admitted:
            with self._lock:
                self.total += 1
                self.by_action["429-limit"] += 1
                self.log.append({"n": self.total, "action": "429-limit", "key": body_key(body), "t": time.time()})
            self._write(writer, 429, b'{"error":{"message":"Rate limit reached","type":"requests"}}', limit_headers)
            try:
                await writer.drain()
            except ConnectionError:
                return False
            return True
        action = self._choose(raw)
        with self._lock:
            self.total += 1
            n = self.total
            self.by_action[action] += 1
            self.log.append({"n": n, "action": action, "key": body_key(body), "t": time.time()})
        if self.on_request is not None:
            override = await asyncio.get_running_loop().run_in_executor(None, self.on_request, n, body)
            if override:
                action = override
                with self._lock:
                    self.log[-1]["action"] = action
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if action == "drop":
            return False
        if action == "429":
            self._write(writer, 429, b'{"error":{"message":"rate limited","type":"rate_limit"}}',
                        {"Retry-After": f"{self.retry_after:g}"})
        elif action == "500":
            self._write(writer, 500, b'{"error":{"message":"internal error","type":"server_error"}}')
        elif action == "401":
            msg = json.dumps({"error": {"message": f"Incorrect API key provided: {auth}", "type": "auth"}})
            self._write(writer, 401, msg.encode())
        elif action == "400":
            self._write(writer, 400, b'{"error":{"message":"bad request","type":"invalid_request_error"}}')
        elif action == "malformed":
            self._write(writer, 200, b'{"id": "x", "choices": [ this is not json')
        else:
            if action == "slow":
                await asyncio.sleep(self.slow_s)
            content = "" if action == "empty" else self.responder(body)
            prompt_tokens = sum(count_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
            completion_tokens = count_tokens(content)
            resp = {
                "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            }
            if action == "ok":
                with self._lock:
                    self.ok_bodies[body_key(body)] += 1
                    self.usage_served["prompt_tokens"] += prompt_tokens
                    self.usage_served["completion_tokens"] += completion_tokens
            self._write(writer, 200, json.dumps(resp).encode("utf-8"))
        try:
            await writer.drain()
        except ConnectionError:
            return False
        return True


def main() -> None:
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="OpenAI-compatible loopback server with fixed latency / faults")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--schedule", default="", help="comma-separated actions for the first requests")
    ap.add_argument("--rpm", type=float, default=None, help="enforce a requests-per-minute limit (429s)")
    ap.add_argument("--tpm", type=float, default=None, help="enforce a tokens-per-minute limit (429s)")
    ap.add_argument("--burst-s", type=float, default=1.0, help="seconds of each limit a burst may use")
    ap.add_argument("--responder", choices=["default", "synth"], default="default",
                    help="synth: well-formed replies to every synthesis prompt (tests/support/synth_helpers.py)")
    args = ap.parse_args()
    responder = default_responder
    if args.responder == "synth":
        from synth_helpers import synth_responder

        responder = synth_responder
    srv = FaultServer(latency_s=args.latency, port=args.port, responder=responder, rpm=args.rpm, tpm=args.tpm,
                      burst_s=args.burst_s, schedule=[a for a in args.schedule.split(",") if a]).start()
    print(f"READY {srv.base_url}", flush=True)
    try:
        sys.stdin.read()  # serve until stdin closes (the parent exits or closes the pipe)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
