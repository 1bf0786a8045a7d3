"""Token usage and cost: per request, per shard; prices come from the config's table (USD / 1M tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

from skymath.config.llm import LLMConfig, Price


def price_for(llm: LLMConfig, model: str | None) -> Price | None:
    """Exact name, else the longest table name that prefixes the model (gpt-4o-2024-08-06 -> gpt-4o)."""
    if not model:
        return None
    if model in llm.prices:
        return llm.prices[model]
    best = None
    for name, price in llm.prices.items():
        if model.startswith(name) and (best is None or len(name) > len(best[0])):
            best = (name, price)
    return best[1] if best else None


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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_model: dict[str, list[int]] = field(default_factory=dict)  # model -> [prompt, completion]

    def add_tokens(self, model: str, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        pc = self.by_model.setdefault(model, [0, 0])
        pc[0] += prompt
        pc[1] += completion

    def totals(self, llm: LLMConfig) -> dict:
        ref = price_for(llm, llm.reference_price_model)
        c = sum(cost(price_for(llm, m), p, k) for m, (p, k) in self.by_model.items())
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failures": self.failures,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(c, 6),
            "reference_cost_usd": round(cost(ref, self.prompt_tokens, self.completion_tokens), 6),
        }


def add_totals(a: dict, b: dict) -> dict:
    """Sum two usage dicts (numbers add, keys of either kept)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, (int, float)) and isinstance(out.get(k, 0), (int, float)):
            out[k] = round(out.get(k, 0) + v, 6) if isinstance(v, float) else out.get(k, 0) + v
        else:
            out.setdefault(k, v)
    return out
