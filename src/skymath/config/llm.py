"""The LLM endpoint(s) that synthesis, judges and API evaluation talk to."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from skymath.config.base import Strict


class Endpoint(Strict):
    base_url: str
    model: str | None = None  # default: LLMConfig.model
    # "api": a paid API (tokens priced from llm.prices); "local": a self-hosted server (no spend).
    # Default: "api" for llm.endpoints, "local" for the servers of an llm-server service stage.
    kind: Literal["api", "local"] | None = None


class Price(Strict):
    """USD per 1M tokens."""

    prompt: float = 0.0
    completion: float = 0.0


# The paper's model and today's common ones: OpenAI list prices (standard tier, USD per 1M input /
# output tokens) as of PRICES_AS_OF. Prices change: check https://openai.com/api/pricing and
# override single entries in `llm.prices` (they are merged over this table). A model is priced by
# its exact name or by its name without a date suffix (gpt-4o-2024-08-06 -> gpt-4o), never by a
# shorter prefix: `gpt-4` must not price `gpt-4-1106-preview` (3x) or `gpt-4.1` (15x).
PRICES_AS_OF = "2025-08-07"
PAPER_MODEL = "gpt-4-1106-preview"  # Skywork-Math synthesized with GPT-4-1106-preview
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4-1106-preview": (10.0, 30.0),
    "gpt-4-0125-preview": (10.0, 30.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4": (30.0, 60.0),
    "gpt-4-32k": (60.0, 120.0),
    "gpt-3.5-turbo": (0.5, 1.5),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "o3": (2.0, 8.0),
    "o3-mini": (1.1, 4.4),
    "o4-mini": (1.1, 4.4),
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.4),
}


def default_prices() -> dict[str, Price]:
    return {k: Price(prompt=p, completion=c) for k, (p, c) in DEFAULT_PRICES.items()}


class LLMConfig(Strict):
    model: str = PAPER_MODEL
    endpoints: list[Endpoint] = Field(default_factory=list)
    # name of an `llm-server` stage whose servers publish their endpoints into the run directory
    service: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: Path | None = None
    concurrency: int = Field(16, ge=1)  # requests in flight per shard
    # the API key's limits (requests / tokens per minute). Every shard of the run, of every stage
    # and executor, shares them through one budget file in the run directory (rate_share: run);
    # `process` gives each process the whole limit (only right for a single process).
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    rate_share: Literal["run", "process"] = "run"
    rate_dir: Path | None = None  # default <run>/ratelimit; point runs that share a key at one dir
    rate_headroom: float = Field(0.95, gt=0, le=1)  # use this fraction of rpm/tpm (jitter, other users)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(8, ge=0)
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(120.0, ge=0)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(2048, ge=1)
    # samples of one prompt drawn per request (OpenAI `n`): sample indices j of the same prompt go
    # n at a time (j // n) in one request, whose tokens are counted once; a choice the server did
    # not return (transformers serve ignores `n`) is asked for alone. vLLM draws them in one batch.
    n: int = Field(1, ge=1, le=128)
    cache: bool = True
    failure_tolerance: float = Field(0.01, ge=0, le=1)
    # USD per 1M tokens; entries given here are merged over DEFAULT_PRICES (dated PRICES_AS_OF)
    prices: dict[str, Price] = Field(default_factory=default_prices)
    prices_as_of: str = PRICES_AS_OF
    # what reports and `skymath estimate` price tokens at when the served model has no price
    # (a local server): the paper's model, so a demo shows what the paper's API would have charged
    reference_price_model: str = PAPER_MODEL
    # send a per-request `seed` derived from the cache key: distinct, reproducible samples
    send_seed: bool = True
    # how long a synthesis shard waits for the first endpoint of `service` to appear
    endpoint_wait_s: float = Field(900.0, ge=0)
    # seconds an endpoint that refused connections is skipped before it is tried again
    endpoint_down_s: float = Field(15.0, ge=0)
    # tokenizer for `skymath estimate` (HF dir/hub name or tiny:smollm2); default: tiktoken of `model`
    tokenizer: str | None = None

    @field_validator("prices", mode="after")
    @classmethod
    def _merge_prices(cls, v: dict[str, Price]) -> dict[str, Price]:
        return {**default_prices(), **v}
