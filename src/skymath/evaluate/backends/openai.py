"""API models through the synthesis client (`skymath.synth.client.LLMClient`): retries, rate
limits, response cache and token accounting come for free. Greedy = temperature 0.

A request that still failed after the client's retries (rate limit, timeout, server gone, 4xx,
empty content) comes back as a Generation with `error` set: it is never graded. `max_length` is
the total budget: each request asks for at most max_length minus its prompt tokens (counted with
`llm.tokenizer` or the llm-server's model when set, else tiktoken, else 4 characters per token;
the chat template's few extra tokens are not counted)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skymath.evaluate.backends.base import Generation


class OpenAIBackend:
    name = "openai"
    tokenizer = None

    def __init__(self, model: str, llm: Any = None, cache_dir: Path | None = None, ctx: Any = None,
                 max_length: int | None = None, **_: Any) -> None:
        from skymath.config.llm import LLMConfig
        from skymath.synth.client import LLMClient

        llm = (llm or LLMConfig()).model_copy(update={"model": model})
        self.max_length = max_length
        self._count = None
        if max_length is not None:
            from types import SimpleNamespace

            from skymath.synth.estimate import make_counter

            cfg = SimpleNamespace(llm=llm, stages=ctx.config.stages if ctx is not None else {},
                                  run_dir=ctx.config.run_dir if ctx is not None else None)
            self._count, self.counter_name = make_counter(cfg)
        if ctx is not None:
            self.client = LLMClient.for_context(ctx, cache_dir=cache_dir, llm=llm)
        else:
            self.client = LLMClient.from_config(llm, cache_dir=cache_dir)

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        from skymath.synth.client import ChatRequest

        budgets = [self._budget(p, max_new_tokens) for p in prompts]
        reqs = [ChatRequest(key=str(i), messages=[{"role": "user", "content": p}], temperature=0.0,
                            max_tokens=b) for i, (p, b) in enumerate(zip(prompts, budgets, strict=True)) if b > 0]
        results = self.client.run_batch(reqs)
        by_key = {r.key: r for r in results}
        gens = []
        for i in range(len(prompts)):
            r = by_key.get(str(i))
            if r is None:  # the prompt alone fills the total budget: nothing can be generated
                gens.append(Generation(index=i, text="", finish_reason="length"))
                continue
            gens.append(Generation(index=i, text=r.text or "", prompt_tokens=r.usage.get("prompt_tokens", 0),
                                   completion_tokens=r.usage.get("completion_tokens", 0),
                                   finish_reason=r.finish_reason if r.ok else None,
                                   error=None if r.ok else f"request failed after {r.attempts} attempt(s): {r.error}"))
        return gens

    def _budget(self, prompt: str, max_new_tokens: int) -> int:
        if self._count is None or self.max_length is None:
            return max_new_tokens
        return max(0, min(max_new_tokens, self.max_length - self._count(prompt)))

    def usage(self) -> dict:
        return self.client.usage_totals()

    def close(self) -> None:
        self.client.close()


def build(model: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(model, **options)
