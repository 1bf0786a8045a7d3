"""A scripted judge for the hygiene tests, served by the real loopback FaultServer: the problem text
carries the answer the judge gives, e.g. `[rate=7]`, `[rate=none]`, `[verdict=incorrect]`."""

from __future__ import annotations

import re
from typing import Any

from support.fault_server import FaultServer


def judge_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    if m := re.search(r"\[rate=(\w+)\]", prompt):
        if m.group(1) == "none":
            return "This problem needs some algebra. I would call it fairly hard."
        return f"Step 1: it needs factoring.\nStep 2: casework.\n**Difficulty: {m.group(1)}**"
    if m := re.search(r"\[verdict=(\w+)\]", prompt):
        if m.group(1) == "none":
            return "The reasoning looks plausible."
        gold = "gold seen" if "known correct final answer" in prompt else "no gold"
        return f"Checking each step ({gold}).\nVerdict: {m.group(1)}"
    return "?"


def judge_server(**kw: Any) -> FaultServer:
    return FaultServer(responder=judge_responder, **kw)


def llm_config(srv: FaultServer) -> dict[str, Any]:
    return {"llm": {"model": srv.model, "endpoints": [{"base_url": srv.base_url, "model": srv.model}],
                    "max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 10,
                    "concurrency": 4}}
