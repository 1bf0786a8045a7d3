"""API models through the synthesis client (`skymath.synth.client.LLMClient`): retries, rate
limits, response cache and token accounting come for free. Greedy = temperature 0."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skymath.evaluate.backends.base import Generation


class OpenAIBackend:
    name = "openai"
    tokenizer = None

    def __init__(self, model: str, llm: Any = None, cache_dir: Path | None = None, ctx: Any = None, **_: Any) -> None:
        from skymath.config.llm import LLMConfig
        from skymath.synth.client import LLMClient

        llm = (llm or LLMConfig()).model_copy(update={"model": model})
        if ctx is not None:
            self.client = LLMClient.for_context(ctx, cache_dir=cache_dir, llm=llm)
        else:
            self.client = LLMClient.from_config(llm, cache_dir=cache_dir)

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        from skymath.synth.client import ChatRequest

        reqs = [ChatRequest(key=str(i), messages=[{"role": "user", "content": p}], temperature=0.0,
                            max_tokens=max_new_tokens) for i, p in enumerate(prompts)]
        results = self.client.run_batch(reqs)
        by_key = {r.key: r for r in results}
        gens = []
        for i in range(len(prompts)):
            r = by_key[str(i)]
            gens.append(Generation(index=i, text=r.text or "", prompt_tokens=r.usage.get("prompt_tokens", 0),
                                   completion_tokens=r.usage.get("completion_tokens", 0),
                                   finish_reason=r.finish_reason if r.ok else f"error: {r.error}"))
        return gens

    def usage(self) -> dict:
        return self.client.usage_totals()

    def close(self) -> None:
        self.client.close()


def build(model: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(model, **options)
