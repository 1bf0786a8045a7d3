"""The LLM endpoint(s) that synthesis, judges and API evaluation talk to."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from skymath.config.base import Strict


class Endpoint(Strict):
    base_url: str
    model: str | None = None  # default: LLMConfig.model


class Price(Strict):
    """USD per 1M tokens."""

    prompt: float = 0.0
    completion: float = 0.0


class LLMConfig(Strict):
    model: str = "gpt-4"
    endpoints: list[Endpoint] = Field(default_factory=list)
    # name of an `llm-server` stage whose servers publish their endpoints into the run directory
    service: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: Path | None = None
    concurrency: int = Field(16, ge=1)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(8, ge=0)
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(120.0, ge=0)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(2048, ge=1)
    cache: bool = True
    failure_tolerance: float = Field(0.01, ge=0, le=1)
    prices: dict[str, Price] = Field(
        default_factory=lambda: {
            "gpt-4": Price(prompt=30.0, completion=60.0),
            "gpt-4o": Price(prompt=2.5, completion=10.0),
            "gpt-4o-mini": Price(prompt=0.15, completion=0.6),
        }
    )
    # price used for reports when the served model is not in the table (e.g. a local server)
    reference_price_model: str = "gpt-4"
    # send a per-request `seed` derived from the cache key: distinct, reproducible samples
    send_seed: bool = True
    # how long a synthesis shard waits for the first endpoint of `service` to appear
    endpoint_wait_s: float = Field(900.0, ge=0)
    # seconds an endpoint that refused connections is skipped before it is tried again
    endpoint_down_s: float = Field(15.0, ge=0)
    # tokenizer for `skymath estimate` (HF dir/hub name or tiny:smollm2); default: tiktoken of `model`
    tokenizer: str | None = None
