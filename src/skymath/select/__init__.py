"""Selection of training data: core-set diversity (k-center greedy), hard problems, verifier filter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def shard_inputs(ctx: Any, stages: list[str] | None = None) -> Iterator[Any]:
    """This shard's part of the input records: its slice of the input files when there are at least
    as many files as shards (no shard parses another's files), else its slice of the records."""
    from skymath.records import read_records

    files = [p for s in (stages or [None]) for p in ctx.input_paths(s)]
    if len(files) >= ctx.num_shards:
        return read_records(ctx.my_slice(files))
    return iter(ctx.my_slice(list(read_records(files))))
