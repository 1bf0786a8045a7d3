"""Core-set selection by k-center greedy (Sener & Savarese 2017), the recipe's diversity step.

Each step adds the point farthest from the chosen centers. It keeps the O(N) vector of every
point's squared distance to its nearest center and makes one distance pass per new center, over
row chunks, so memory stays O(N*d) (never N x k). Torch on a GPU when present, numpy on CPU.
Deterministic: the first center comes from the seed; ties go to the lowest index; a chosen
center is never chosen again (points duplicating a center come next, in index order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skymath.errors import UserError


@dataclass
class CoresetResult:
    order: np.ndarray  # int64 [k]: indices in selection order
    selection_distance: np.ndarray  # float64 [k]: distance of each pick to the earlier centers (inf for the first)
    radius_curve: list[tuple[int, float]] = field(default_factory=list)  # (centers, covering radius) at each 1% of k

    @property
    def radius(self) -> float:
        return self.radius_curve[-1][1] if self.radius_curve else math.inf


def resolve_k(n: int, k: int | None, fraction: float | None) -> int:
    if (k is None) == (fraction is None):
        raise UserError("coreset: give exactly one of k and fraction")
    if k is None:
        assert fraction is not None
        k = max(1, round(n * fraction))
    return min(k, n)


def checkpoints(k: int) -> list[int]:
    """Center counts after each 1% of k (deduplicated when k < 100)."""
    return sorted({max(1, math.ceil(k * p / 100)) for p in range(1, 101)})


class _Numpy:
    def __init__(self, x: np.ndarray, chunk_rows: int) -> None:
        self.x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
        self.chunk = chunk_rows
        self.sq = np.einsum("ij,ij->i", self.x, self.x)
        self.mind = np.full(len(self.x), np.inf, dtype=self.x.dtype)
        self.buf = np.empty(min(chunk_rows, len(self.x)), dtype=self.x.dtype)

    def add(self, c: int) -> None:
        xc, sqc = self.x[c], self.sq[c]
        for lo in range(0, len(self.x), self.chunk):
            hi = min(lo + self.chunk, len(self.x))
            d2 = self.buf[: hi - lo]
            np.dot(self.x[lo:hi], xc, out=d2)  # the one pass over the matrix; the rest stays in cache
            d2 *= -2
            d2 += self.sq[lo:hi]
            d2 += sqc
            np.maximum(d2, 0, out=d2)
            np.minimum(self.mind[lo:hi], d2, out=self.mind[lo:hi])
        self.mind[c] = -1.0  # chosen: never again

    def argmax(self) -> tuple[int, float]:
        i = int(np.argmax(self.mind))
        return i, float(self.mind[i])


class _Torch:
    def __init__(self, x: np.ndarray, chunk_rows: int, device: str) -> None:
        import torch

        self.torch = torch
        dt = torch.float16 if device.startswith("cuda") and x.dtype == np.float16 else torch.float32
        if x.dtype == np.float64:
            dt = torch.float64
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=dt)
        # on a GPU small chunks make the pass launch-bound: chunk by millions of rows (temporaries stay O(N))
        self.chunk = chunk_rows if device == "cpu" else max(chunk_rows, 1 << 22)

        acc = torch.float64 if dt == torch.float64 else torch.float32
        self.sq = torch.empty(len(x), dtype=acc, device=device)
        for lo in range(0, len(x), chunk_rows):
            xs = self.x[lo:lo + chunk_rows].to(acc)
            self.sq[lo:lo + chunk_rows] = (xs * xs).sum(1)
        self.mind = torch.full((len(x),), math.inf, dtype=acc, device=device)

    def add(self, c: int) -> None:
        xc, sqc = self.x[c], self.sq[c]
        for lo in range(0, len(self.x), self.chunk):
            hi = min(lo + self.chunk, len(self.x))
            if self.x.dtype == self.mind.dtype:
                d2 = self.torch.addmv(self.sq[lo:hi], self.x[lo:hi], xc, alpha=-2)
            else:
                d2 = (self.x[lo:hi] @ xc).to(self.mind.dtype).mul_(-2).add_(self.sq[lo:hi])
            d2.add_(sqc).clamp_(min=0)
            self.torch.minimum(self.mind[lo:hi], d2, out=self.mind[lo:hi])
        self.mind[c] = -1.0

    def argmax(self) -> tuple[int, float]:
        m, i = self.torch.max(self.mind, dim=0)  # first index of the maximum
        return int(i), float(m)


def k_center_greedy(x: np.ndarray, k: int, seed: int = 0, device: str = "cpu", chunk_rows: int = 8192,
                    first: int | None = None, progress: Callable[[int], Any] | None = None,
                    stop: Callable[[], bool] | None = None, backend: str = "auto") -> CoresetResult:
    """Select k of the N rows of x (Euclidean distance).

    device: "cpu", "cuda[:i]" or "auto"; backend: "auto" (numpy on CPU, torch elsewhere), "numpy", "torch".
    """
    n = len(x)
    if n == 0 or k <= 0:
        return CoresetResult(np.empty(0, np.int64), np.empty(0), [])
    k = min(k, n)
    if device == "auto":
        from skymath.select.embed import resolve_device

        device = resolve_device("auto")
    if backend == "auto":
        backend = "numpy" if device == "cpu" else "torch"
    if backend not in ("numpy", "torch"):
        raise UserError(f"coreset: unknown backend {backend!r} (auto | numpy | torch)")
    if backend == "numpy" and device != "cpu":
        raise UserError(f"coreset: the numpy backend runs on the CPU, not {device!r}")
    impl: Any = _Numpy(x, chunk_rows) if backend == "numpy" else _Torch(x, chunk_rows, device)
    c = int(np.random.default_rng(seed).integers(n)) if first is None else first
    order = np.empty(k, dtype=np.int64)
    sel = np.empty(k, dtype=np.float64)
    sel[0] = math.inf
    marks = set(checkpoints(k))
    curve: list[tuple[int, float]] = []
    for j in range(k):
        if j:
            c, d2 = impl.argmax()
            sel[j] = math.sqrt(max(d2, 0.0))
        order[j] = c
        impl.add(c)
        if j + 1 in marks:
            _, d2 = impl.argmax()
            curve.append((j + 1, math.sqrt(max(d2, 0.0)) if j + 1 < n else 0.0))
        if progress is not None:
            progress(1)
        if stop is not None and stop():
            raise InterruptedError("stop requested")
    return CoresetResult(order, sel, curve)
