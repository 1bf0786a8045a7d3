"""`kind: tokenize` — tokenize and mask the SFT data on CPU nodes before the GPUs start.

A `cpu-array` stage: shard i tokenizes its contiguous share of the input record shards (with
`num_shards` equal to the input stage's shard count, one input shard each) into
`stages/<name>/shard-0000i.tok/` (see skymath.train.tokenized), using `resources.cpus` tokenizer
threads. The `sft` stage that depends on it only memory-maps those parts: no training rank
tokenizes, reads or hashes raw records.

There are no data settings here: the tokenizer (the root model of the consuming sft stage's
`stage:` chain), max_length, truncation, prompt_style and the validation slice all come from
the sft stage(s) that depend on this one, so the two can never disagree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from skymath.errors import UserError
from skymath.stages import StageParams

KIND = "tokenize"
SHAPE = "cpu-array"
PART_SUFFIX = ".tok"
MAX_VAL_FRACTION = 0.1  # val_samples never takes more than this share of the records (but >= 1)
EXACT_VAL_LIMIT = 20_000  # up to this many records the slice has exactly the planned size


class Params(StageParams):
    """No keys: the data settings belong to the sft stage that consumes this one."""


def consumers(cfg: Any, name: str) -> list[str]:
    """The sft stages that train on this stage's output."""
    from skymath.stages.sft import KIND as SFT
    from skymath.stages.sft import data_stage_names

    return [s for s, spec in cfg.stages.items() if spec.kind == SFT and name in data_stage_names(cfg, s)]


def root_model(cfg: Any, sft_stage: str) -> str:
    """The model reference at the start of an sft stage's `stage:` chain (its tokenizer is the chain's)."""
    seen: set[str] = set()
    ref = cfg.stages[sft_stage].params.model
    while ref.startswith("stage:"):
        src = ref.split(":", 1)[1]
        if src in seen or src not in cfg.stages:
            break
        seen.add(src)
        ref = cfg.stages[src].params.model
    return ref


def data_spec(cfg: Any, sft_stage: str) -> dict[str, Any]:
    """Everything that decides the tokenized data of an sft stage (compared across consumers)."""
    p = cfg.stages[sft_stage].params
    return {"tokenizer": root_model(cfg, sft_stage), "max_length": p.max_length, "truncation": p.truncation,
            "prompt_style": p.prompt_style, "val_samples": p.val_samples, "val_fraction": p.val_fraction,
            "seed": p.seed if p.seed is not None else cfg.run.seed}


def check_config(cfg: Any, name: str, source: str) -> None:
    check_consumers(cfg, source)


def check_consumers(cfg: Any, source: str) -> None:
    """Every tokenize stage depends on record stages only, feeds >= 1 sft stage, and its consumers
    agree on the data settings. The consumer part runs once every sft stage's params are typed (the
    config loader types stages in file order; the sft stages call this too)."""
    from skymath.train.params import SFTParams

    for name, spec in cfg.stages.items():
        if spec.kind != KIND:
            continue
        where = f"{source}: stages.{name}"
        if not spec.depends_on:
            raise UserError(f"{where}.depends_on: a tokenize stage needs the record stages it tokenizes")
        for d in spec.depends_on:
            if cfg.stages[d].kind in ("sft", KIND):
                raise UserError(f"{where}.depends_on: {d!r} is a {cfg.stages[d].kind} stage, not a record stage")
    if any(s.kind == "sft" and not isinstance(s.params, SFTParams) for s in cfg.stages.values()):
        return
    for name, spec in cfg.stages.items():
        if spec.kind != KIND:
            continue
        where = f"{source}: stages.{name}"
        users = consumers(cfg, name)
        if not users:
            raise UserError(f"{where}: no sft stage depends on it (its settings come from that sft stage)")
        first = data_spec(cfg, users[0])
        for other in users[1:]:
            spec2 = data_spec(cfg, other)
            diff = [k for k in first if first[k] != spec2[k]]
            if diff:
                raise UserError(f"{where}: sft stages {users[0]!r} and {other!r} need different tokenized data "
                                f"({diff[0]}: {first[diff[0]]!r} vs {spec2[diff[0]]!r}); give each its own "
                                f"tokenize stage")


def part_path(run: Any, stage: str, shard: int) -> Path:
    return run.shard_path(stage, shard, PART_SUFFIX)


def input_records(run: Any, cfg: Any, stages: list[str]) -> tuple[list[Path], int]:
    """All finished record shards of `stages` (in order) and their record count from the markers."""
    files: list[Path] = []
    total = 0
    for s in stages:
        n = cfg.stages[s].num_shards
        if not run.stage_complete(s, n):
            raise UserError(f"input stage {s!r} is incomplete (missing shards {run.missing_shards(s, n)[:10]})")
        files.extend(run.output_files(s, n))
        for i in range(n):
            total += int((run.read_marker(run.done_path(s, i)) or {}).get("records", 0) or 0)
    return files, total


def val_threshold(spec: dict[str, Any], files: list[Path], total_records: int) -> float:
    """The hash threshold of the validation slice (skymath.train.tokenized.is_val): val_fraction if
    set; else about val_samples records, at most MAX_VAL_FRACTION of them (at least one). Up to
    EXACT_VAL_LIMIT records every shard reads all record ids and picks exactly that many (small
    runs get a usable slice); above it the threshold is val_samples / records, so no shard reads
    another shard's input. Either way the slice is the same whatever the sharding."""
    if spec["val_fraction"] is not None:
        return float(spec["val_fraction"])
    if not spec["val_samples"]:
        return 0.0
    if total_records <= 0:  # markers without record counts: count them (rare; small stages)
        from skymath.train.data import RecordPairs

        total_records = sum(1 for _ in RecordPairs(files))
    if total_records <= 1:
        return 0.0
    k = min(spec["val_samples"], max(1, int(total_records * MAX_VAL_FRACTION)))
    if total_records > EXACT_VAL_LIMIT:
        return k / total_records
    from skymath.train.data import RecordPairs
    from skymath.train.tokenized import val_hash

    hashes = sorted(val_hash(rid, spec["seed"]) for rid, _, _ in RecordPairs(files))
    return hashes[k] if k < len(hashes) else 0.0  # fewer records than that: train on all of them


def tokenize_files(files: list[Path], spec: dict[str, Any], fraction: float, out: Path,
                   run_root: Path | None, progress: Any = None) -> dict[str, Any]:
    """Tokenize record shards into one part directory (used by this stage and by a 1-process sft)."""
    from transformers import AutoTokenizer

    from skymath.models import resolve_model
    from skymath.train.data import DataSettings, RecordPairs
    from skymath.train.tokenized import write_part

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(spec["tokenizer"], run_root=run_root))
    settings = DataSettings(spec["max_length"], spec["truncation"], spec["prompt_style"])
    pairs = RecordPairs(files)
    return write_part(pairs, tokenizer, settings, out, val_fraction=fraction, seed=spec["seed"],
                      progress=progress, extra={"inputs": [str(f) for f in files]})


def run(ctx: Any) -> dict[str, Any]:
    cpus = max(1, int(ctx.spec.resources.cpus or 1))
    # the Rust tokenizer's thread pool: this job's cores (the profile may switch it off globally)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if cpus > 1 else "false"
    os.environ.setdefault("RAYON_NUM_THREADS", str(cpus))
    users = consumers(ctx.config, ctx.stage_name)
    spec = data_spec(ctx.config, users[0])
    files, total = input_records(ctx.run, ctx.config, list(ctx.spec.depends_on))
    n, k = len(files), ctx.num_shards
    mine = files[(n * ctx.shard) // k:(n * (ctx.shard + 1)) // k]
    fraction = val_threshold(spec, files, total)
    ctx.log.info("tokenizing %d of %d input shards for %s (validation hash threshold %.4g)", len(mine), n,
                 ", ".join(users), fraction)
    out = part_path(ctx.run, ctx.stage_name, ctx.shard)
    with ctx.progress(desc=f"{ctx.stage_name}[{ctx.shard}] tokenize", unit="rec") as bar:
        meta = tokenize_files(mine, spec, fraction, out, ctx.run.root, progress=bar)
    return {"records": meta["train_samples"], "part": str(out), **{k: meta[k] for k in (
        "train_samples", "train_tokens", "val_samples", "val_tokens", "truncated", "dropped", "skipped_no_response")},
        "inputs": len(mine), "tokenizer": spec["tokenizer"]}
