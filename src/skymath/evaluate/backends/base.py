"""What every backend returns, and the shared request-order bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Generation:
    index: int  # position of the request in the call
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None  # "stop" | "length" (an error never hides here: see `error`)
    # Why the generation failed (API error, timeout, server gone, engine exception), or None.
    # A failed generation is never graded: it is recorded as a failure, excluded from `n`, and
    # retried on the shard's rerun (an error is never a verdict).
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


ERROR_FINISH_REASONS = frozenset({"error", "abort", "aborted", "cancelled", "canceled"})


def generation_error(gen: Generation) -> str | None:
    """Why a generation failed, or None: its `error`, else an error finish reason (an engine or
    server that reports a failure only through `finish_reason`, with empty or partial text)."""
    if gen.error is not None:
        return gen.error
    fr = (gen.finish_reason or "").strip().lower()
    if fr in ERROR_FINISH_REASONS or fr.startswith("error"):
        what = "empty output" if not (gen.text or "").strip() else "output cut by an error"
        return f"{what} (finish reason {gen.finish_reason!r})"
    return None


class Backend(Protocol):
    name: str
    tokenizer: Any  # for the "chat" prompt style (None for API models)

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]: ...

    def close(self) -> None: ...


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Request indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def in_request_order(gens: Sequence[Generation], n: int) -> list[Generation]:
    """Place generations by their request index; every index 0..n-1 must appear exactly once."""
    out: list[Generation | None] = [None] * n
    for g in gens:
        if not 0 <= g.index < n or out[g.index] is not None:
            raise RuntimeError(f"backend returned request index {g.index} twice or out of range 0..{n - 1}")
        out[g.index] = g
    missing = [i for i, g in enumerate(out) if g is None]
    if missing:
        raise RuntimeError(f"backend returned no output for requests {missing[:10]}")
    return [g for g in out if g is not None]
