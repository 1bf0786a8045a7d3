"""Token usage and cost: per request, per shard; prices come from the config's table (USD / 1M tokens).

API spend and local generation are kept apart: tokens served by a paid API (llm.endpoints) are
priced from `llm.prices`; tokens served by self-hosted servers (an llm-server service, or an
endpoint with `kind: local`) cost nothing and are shown with what the reference model (the
paper's GPT-4-1106-preview by default) would have charged for them.

Every LLMClient created in a shard registers its Usage here; the worker adds the totals to the
shard's `.done` marker as `usage` when the stage did not report usage itself, so a stage that
calls an API cannot forget to report what it spent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from skymath.config.llm import LLMConfig, Price

_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


def price_for(llm: LLMConfig, model: str | None) -> Price | None:
    """Exact name, else the name without a date suffix (gpt-4o-2024-08-06 -> gpt-4o, gpt-4-0613 ->
    gpt-4). Never a shorter prefix: gpt-4-1106-preview is not gpt-4, gpt-4.1 is not gpt-4."""
    if not model:
        return None
    if model in llm.prices:
        return llm.prices[model]
    base = _DATE_SUFFIX.sub("", model)
    return llm.prices.get(base)


def cost(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1e6


@dataclass
class Usage:
    requests: int = 0  # HTTP requests sent (every attempt)
    succeeded: int = 0
    failures: int = 0  # requests that failed permanently (after retries)
    cached: int = 0  # answered from the cache: not sent, not paid
    rate_limited: int = 0  # 429 answers received
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_model: dict[str, list[int]] = field(default_factory=dict)  # API model -> [prompt, completion]
    local_prompt_tokens: int = 0  # served by self-hosted servers: no spend
    local_completion_tokens: int = 0

    def add_tokens(self, model: str, prompt: int, completion: int, local: bool = False) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if local:
            self.local_prompt_tokens += prompt
            self.local_completion_tokens += completion
            return
        pc = self.by_model.setdefault(model, [0, 0])
        pc[0] += prompt
        pc[1] += completion

    def totals(self, llm: LLMConfig) -> dict:
        ref = price_for(llm, llm.reference_price_model)
        api_p = sum(p for p, _ in self.by_model.values())
        api_c = sum(c for _, c in self.by_model.values())
        c = sum(cost(price_for(llm, m), p, k) for m, (p, k) in self.by_model.items())
        unpriced = sorted(m for m in self.by_model if price_for(llm, m) is None)
        out: dict[str, Any] = {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failures": self.failures,
            "cached": self.cached,
            "rate_limited": self.rate_limited,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "api_prompt_tokens": api_p,
            "api_completion_tokens": api_c,
            "local_prompt_tokens": self.local_prompt_tokens,
            "local_completion_tokens": self.local_completion_tokens,
            "cost_usd": round(c, 6),  # API spend at the table's prices
            "reference_cost_usd": round(cost(ref, self.prompt_tokens, self.completion_tokens), 6),
            "reference_model": llm.reference_price_model,
            "prices_as_of": llm.prices_as_of,
        }
        if unpriced:
            out["unpriced_models"] = unpriced  # API tokens the table has no price for (cost_usd excludes them)
        return out


_NUMERIC_SKIP = ("prices_as_of", "reference_model")


def add_totals(a: dict, b: dict) -> dict:
    """Sum two usage dicts (numbers add, keys of either kept)."""
    out = dict(a)
    for k, v in b.items():
        if k not in _NUMERIC_SKIP and isinstance(v, (int, float)) and isinstance(out.get(k, 0), (int, float)):
            out[k] = round(out.get(k, 0) + v, 6) if isinstance(v, float) else out.get(k, 0) + v
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = sorted(set(out[k]) | set(v))
        else:
            out.setdefault(k, v)
    return out


# ---- per-shard registry: every client's usage reaches the marker ------------------------------------
_REGISTRY: list[tuple[Usage, LLMConfig]] = []


def register(usage: Usage, llm: LLMConfig) -> None:
    _REGISTRY.append((usage, llm))


def begin_shard() -> None:
    """The worker calls this before a stage runs: usage registered from now on is this shard's."""
    _REGISTRY.clear()


def shard_usage() -> dict | None:
    """Totals over every client created since begin_shard(), or None when none was."""
    if not _REGISTRY:
        return None
    total: dict = {}
    for usage, llm in _REGISTRY:
        total = add_totals(total, usage.totals(llm))
    return total


def attach_usage(info: dict) -> dict:
    """Give a `.done` marker the shard's API usage when the stage did not report it itself."""
    if "usage" not in info:
        u = shard_usage()
        if u is not None:
            info["usage"] = u
    return info


def split_spend(marker: dict) -> dict[str, dict[str, float]]:
    """What a report shows per stage: API spend and local generation, kept apart.

    api: requests and tokens sent to paid APIs and their cost at the table's prices.
    local: tokens generated by self-hosted servers or local backends (eval with hf/vllm writes
    prompt_tokens/completion_tokens at the top of its marker), with the reference-model cost."""
    u = marker.get("usage") or {}
    if u and "api_prompt_tokens" not in u:  # markers written before the split: all API
        u = {**u, "api_prompt_tokens": u.get("prompt_tokens", 0), "api_completion_tokens": u.get("completion_tokens", 0)}
    local_p = int(u.get("local_prompt_tokens", 0) or 0)
    local_c = int(u.get("local_completion_tokens", 0) or 0)
    if not u:
        local_p += int(marker.get("prompt_tokens", 0) or 0)
        local_c += int(marker.get("completion_tokens", 0) or 0)
    return {
        "api": {"requests": int(u.get("requests", 0) or 0), "prompt_tokens": int(u.get("api_prompt_tokens", 0) or 0),
                "completion_tokens": int(u.get("api_completion_tokens", 0) or 0),
                "cost_usd": float(u.get("cost_usd", 0.0) or 0.0)},
        "local": {"prompt_tokens": local_p, "completion_tokens": local_c},
    }
