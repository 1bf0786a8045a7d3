"""k-center greedy against a brute-force reference, determinism, radius curve, embeddings offline,
and the coreset stage end to end on real MATH problems with the shipped MiniLM model."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from support.hygiene_run import SOURCE, make_run, put_records, run_shard

from skymath.errors import UserError
from skymath.records import Record, read_jsonl, read_records
from skymath.select.coreset import checkpoints, k_center_greedy, resolve_k


def brute_force(x: np.ndarray, k: int, first: int) -> tuple[list[int], list[float]]:
    """Textbook greedy over the full distance matrix: the farthest point from the chosen set, ties to the lowest index."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    sel = [first]
    radii = [float(d[:, sel].min(1).max())]
    while len(sel) < k:
        best, bestd = -1, -1.0
        for i in range(len(x)):
            if i in sel:
                continue
            di = min(d[i, s] for s in sel)
            if di > bestd:
                best, bestd = i, di
        sel.append(best)
        radii.append(float(d[:, sel].min(1).max()))
    return sel, radii


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_brute_force_reference(backend, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 5))
    x[7] = x[3]  # duplicates must not break it
    k = 30
    res = k_center_greedy(x, k, seed=seed, chunk_rows=17, backend=backend)
    ref, radii = brute_force(x, k, int(res.order[0]))
    assert res.order.tolist() == ref
    assert int(res.order[0]) == int(np.random.default_rng(seed).integers(len(x)))
    curve = dict(res.radius_curve)
    assert sorted(curve) == checkpoints(k)
    for c, r in curve.items():
        assert r == pytest.approx(radii[c - 1], rel=1e-9, abs=1e-9)
    # the distance of each pick is the covering radius just before it
    assert res.selection_distance[1:] == pytest.approx(radii[:-1], rel=1e-9)


def test_radius_never_increases_and_same_seed_same_selection():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    a = k_center_greedy(x, 250, seed=11, chunk_rows=512)
    b = k_center_greedy(x, 250, seed=11, chunk_rows=4096)
    c = k_center_greedy(x, 250, seed=12)
    assert a.order.tolist() == b.order.tolist()
    assert a.order.tolist() != c.order.tolist()
    radii = [r for _, r in a.radius_curve]
    assert len(radii) == 100 and all(r2 <= r1 for r1, r2 in zip(radii, radii[1:], strict=False))
    assert np.all(np.diff(a.selection_distance[1:]) <= 1e-6)
    assert len(set(a.order.tolist())) == 250


def test_k_larger_than_n_and_duplicates_select_every_point_once():
    x = np.zeros((5, 3), dtype=np.float32)
    res = k_center_greedy(x, 9, seed=0)
    assert sorted(res.order.tolist()) == [0, 1, 2, 3, 4] and res.radius == 0.0


def test_resolve_k():
    assert resolve_k(1000, None, 0.05) == 50
    assert resolve_k(10, 50, None) == 10
    with pytest.raises(UserError, match="exactly one"):
        resolve_k(10, 5, 0.5)


def test_embedding_with_the_shipped_model_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    from skymath.select.embed import embed_texts, load_model

    model = load_model("all-MiniLM-L6-v2", "cpu")
    e = embed_texts(model, ["What is 2+3?", "Compute 2 plus 3.", "The mitochondria is the powerhouse of the cell."],
                    batch_size=2)
    assert e.shape == (3, 384) and e.dtype == np.float16
    assert np.allclose(np.linalg.norm(e.astype(np.float32), axis=1), 1.0, atol=1e-2)
    sims = e.astype(np.float32) @ e[0].astype(np.float32)
    assert sims[1] > sims[2] + 0.2


def test_coreset_stage_on_real_problems(data_root, tmp_path):
    rows = list(read_jsonl(data_root / "math_train.jsonl.gz"))[:60:2]
    recs = [Record(id=f"syn{i}", problem=r["problem"], source="synth", level=3) for i, r in enumerate(rows)]
    run = make_run(tmp_path, {"synth": {**SOURCE, "num_shards": 2},
                              "pick": {"kind": "coreset", "depends_on": ["synth"],
                                       "params": {"k": 6, "seed": 3, "device": "cpu"}}})
    put_records(run, "synth", 0, recs[:17])
    put_records(run, "synth", 1, recs[17:])
    assert run_shard(run, "pick") == 0
    out = list(read_records(run.output_files("pick", 1)))
    assert len(out) == 6 and len({r.id for r in out}) == 6
    assert [r.meta["coreset"]["rank"] for r in out] == list(range(6))
    dists = [r.meta["coreset"]["distance"] for r in out]
    assert dists[0] is None and all(a >= b for a, b in zip(dists[1:], dists[2:], strict=False))
    info = json.loads(run.shard_path("pick", 0, ".coreset.json").read_text())
    assert info["order"] == [r.id for r in out] and info["n"] == 30 and info["k"] == 6
    assert [c for c, _ in info["radius_curve"]] == [1, 2, 3, 4, 5, 6]
    marker = run.read_marker(run.done_path("pick", 0))
    assert marker["records"] == 6 and marker["covering_radius"] == pytest.approx(info["radius_curve"][-1][1])
    cache = sorted((run.root / "cache" / "embeddings").glob("*.npy"))
    assert len(cache) == 2 and np.load(cache[0]).dtype == np.float16
    # the result equals k-center greedy over the cached embeddings with the same seed
    x = np.concatenate([np.load(p) for p in sorted(cache, key=lambda p: p.name)]).astype(np.float32)
    ref = k_center_greedy(x, 6, seed=3)
    assert [f"syn{i}" for i in ref.order.tolist()] == info["order"]
    # a rerun reuses the cached embeddings
    mtimes = [p.stat().st_mtime_ns for p in cache]
    run.done_path("pick", 0).unlink()
    assert run_shard(run, "pick") == 0
    assert [p.stat().st_mtime_ns for p in cache] == mtimes
    assert [r.id for r in read_records(run.output_files("pick", 1))] == info["order"]


def test_coreset_config_needs_k_or_fraction(tmp_path):
    with pytest.raises(UserError, match="exactly one of k and fraction"):
        make_run(tmp_path, {"synth": SOURCE, "c": {"kind": "coreset", "depends_on": ["synth"]}})
