"""A scripted model for the evaluation-failure tests, served by the real loopback FaultServer.

The model answers every benchmark item it recognizes in the prompt: correctly for even item
indices (in the paper's format, so both protocols credit it), wrongly for odd ones. Chosen items
fail PERMANENTLY (HTTP 500 on every attempt) until `recover()`: the server's `on_request` hook
finds a doomed item's problem in the request's prompt and answers 500 instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.fault_server import FaultServer


def bench_items(data_root: Path, gsm8k: int, math: int) -> list[dict[str, Any]]:
    """The items an eval stage with these limits evaluates (same loader, same global order)."""
    from skymath.evaluate.benchmarks import BenchmarkSpec, load_items

    return load_items([BenchmarkSpec(name="gsm8k", limit=gsm8k), BenchmarkSpec(name="math", limit=math)], data_root)


class ScriptedEvalModel:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __call__(self, body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        for it in self.items:
            if it["problem"] in prompt:
                answer = it["gold"] if it["index"] % 2 == 0 else "-987654"
                return f"Let me work through it step by step.\nThe answer is {answer}"
        return "I do not know this problem."


class Doom:
    """The `on_request` hook: 500 for a request whose prompt holds a doomed problem, counted."""

    def __init__(self, problems: list[str], also: Any = None) -> None:
        self.problems = list(problems)
        self.also = also
        self.failed = 0

    def __call__(self, n: int, body: dict) -> str | None:
        if self.also is not None:
            self.also(n, body)
        prompt = body["messages"][-1]["content"] if body.get("messages") else ""
        if any(p in prompt for p in self.problems):
            self.failed += 1
            return "500"
        return None


def eval_server(items: list[dict[str, Any]], doomed: list[int] = (), on_request: Any = None,
                **kw: Any) -> FaultServer:
    """A FaultServer answering as ScriptedEvalModel; items at `doomed` indices fail permanently."""
    return FaultServer(responder=ScriptedEvalModel(items), on_request=Doom([items[i]["problem"] for i in doomed],
                                                                             on_request), **kw)


def recover(srv: FaultServer) -> None:
    """The server is healthy again: every request is answered."""
    srv.on_request.problems = []


def llm_block(srv: FaultServer) -> dict[str, Any]:
    """Fast retries: a permanent failure is final after 3 attempts, within a second or two."""
    return {"model": srv.model, "endpoints": [{"base_url": srv.base_url, "model": srv.model}],
            "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 20,
            "concurrency": 4}


def openai_eval_stage(num_shards: int, gsm8k: int, math: int, **params: Any) -> dict[str, Any]:
    return {"kind": "eval", "num_shards": num_shards,
            "params": {"model": "fault-model", "backend": "openai", "max_new_tokens": 64, "chunk": 4,
                       "benchmarks": [{"name": "gsm8k", "limit": gsm8k}, {"name": "math", "limit": math}],
                       **params}}
