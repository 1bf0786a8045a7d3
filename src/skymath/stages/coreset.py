"""Stage `coreset`: pick k diverse records (k-center greedy over sentence embeddings).

In the recipe this picks the "seed synthetic problems" from the first synthesis round.
Embeddings are cached as float16 `.npy` per input shard in `<run>/cache/embeddings` (a restarted
or re-configured selection reuses them). Output: the selected records in selection order with
`meta.coreset` = {rank, distance}; `shard-00000.coreset.json` holds the selection order and the
covering radius after each 1% of k.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from skymath.errors import UserError
from skymath.stages import StageParams

KIND = "coreset"
SHAPE = "cpu-single"  # a GPU node on a cluster: shape gpu-array, resources.gpus 1
SINGLE_SHARD = True


class Params(StageParams):
    k: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    seed: int | None = None  # default: run.seed
    model: str = "all-MiniLM-L6-v2"  # sentence-transformers name or path
    field: Literal["problem", "response", "problem+response"] = "problem"
    batch_size: int = Field(128, ge=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    chunk_rows: int = Field(8192, ge=1)


def check_config(cfg, name: str, source: str) -> None:
    spec = cfg.stages[name]
    p: Params = spec.params
    if (p.k is None) == (p.fraction is None):
        raise UserError(f"{source}: stages.{name}.params: give exactly one of k and fraction")
    if not spec.depends_on:
        raise UserError(f"{source}: stages.{name}.depends_on: a coreset stage needs an input stage")


def estimate_output_count(params: Params, n: int) -> int:
    """How many records the selection keeps out of n (used by `skymath estimate`)."""
    from skymath.select.coreset import resolve_k

    return resolve_k(n, params.k, params.fraction) if n else 0


def _text(rec, field: str) -> str:
    if field == "problem":
        return rec.problem
    if field == "response":
        return rec.response or ""
    return f"{rec.problem}\n{rec.response or ''}"


def run(ctx) -> dict:
    import json

    import numpy as np

    from skymath.records import atomic_write_text, read_records, sha256_file
    from skymath.select.coreset import k_center_greedy, resolve_k
    from skymath.select.embed import cache_key, cached_embeddings, embed_texts, load_model, resolve_device

    p: Params = ctx.params
    files = ctx.input_paths()
    device = resolve_device(p.device)
    model = None
    cache_dir = ctx.run.root / "cache" / "embeddings"
    parts = []
    with ctx.progress(desc=f"{ctx.stage_name} embed", unit="rec") as bar:
        for f in files:
            texts = [_text(r, p.field) for r in read_records(f)]
            path = cache_dir / f"{f.stem}-{cache_key(sha256_file(f), p.model, p.field)}.npy"

            def compute(texts=texts):
                nonlocal model
                if model is None:
                    model = load_model(p.model, device)
                return embed_texts(model, texts, p.batch_size, progress=bar.update)

            was_cached = path.is_file()
            parts.append(cached_embeddings(path, compute, len(texts)))
            if was_cached:
                bar.update(len(texts))
    n = sum(map(len, parts))
    if n == 0:
        raise UserError(f"stage {ctx.stage_name}: the input stages produced no records")
    k = resolve_k(n, p.k, p.fraction)
    dim = parts[0].shape[1]
    x = np.empty((n, dim), dtype=np.float32)  # fp16 on disk, fp32 for BLAS; filled part by part
    lo = 0
    for part in parts:
        x[lo:lo + len(part)] = part
        lo += len(part)
    del parts
    seed = ctx.config.run.seed if p.seed is None else p.seed
    with ctx.progress(total=k, desc=f"{ctx.stage_name} k-center", unit="center") as bar:
        res = k_center_greedy(x, k, seed=seed, device=device, chunk_rows=p.chunk_rows, progress=bar.update)
    del x
    rank = {int(i): j for j, i in enumerate(res.order)}
    chosen: dict[int, object] = {}
    idx = 0
    for f in files:
        for rec in read_records(f):
            if idx in rank:
                chosen[idx] = rec
            idx += 1
    w = ctx.writer(resume=False)
    for j, i in enumerate(res.order.tolist()):
        rec = chosen[i]
        d = float(res.selection_distance[j])
        w.write(rec.model_copy(update={"meta": {**rec.meta, "coreset": {
            "rank": j, "distance": None if d == float("inf") else round(d, 6)}}}))
    info = {"n": n, "k": k, "seed": seed, "model": p.model, "field": p.field, "device": device,
            "order": [chosen[i].id for i in res.order.tolist()],
            "radius_curve": [[c, round(r, 6)] for c, r in res.radius_curve]}
    atomic_write_text(ctx.output_path(".coreset.json"), json.dumps(info) + "\n")
    return {"input": n, "k": k, "covering_radius": round(res.radius, 6), "device": device,
            "radius_at_1pct": round(res.radius_curve[0][1], 6) if res.radius_curve else None}
