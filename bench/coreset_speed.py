"""k-center greedy on CPU: seconds per center vs the memory-bandwidth floor, and peak memory.

N=200K random unit vectors, d=384 (MiniLM size), k=2K. Each new center costs one READ pass over
the float32 matrix (N*d*4 bytes; nothing of that size is written), so the floor per center is those
bytes / the READ bandwidth, measured in the same run over the same matrix: a read-only pass
(max-reduce; the fastest of max, sum and matrix-vector product, chosen first) timed every 10
centers DURING the greedy, so both see the same machine. Both are CPU time of this thread (one
BLAS thread), medians: a loaded machine slows both alike instead of skewing the ratio. (A copy
moves every byte twice, read + write, and would make the floor look up to 2x lower than it is.)
  floor_ratio = median s per center / median read-pass s        (1.0 = bandwidth bound)
  rss_ratio   = (matrix bytes + peak RSS growth during the selection) / matrix bytes   (target <= 1.5)

    python bench/coreset_speed.py [--n 200000] [--d 384] [--k 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread: CPU time of this thread is the whole cost

import numpy as np  # noqa: E402

from skymath.select.coreset import k_center_greedy  # noqa: E402


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def read_bandwidth(x: np.ndarray, repeats: int = 5) -> tuple[float, str]:
    """Bytes/s of the fastest read-only pass over the whole matrix (best of `repeats` each)."""
    v = np.ones(x.shape[1], dtype=x.dtype)
    out = np.empty(len(x), dtype=x.dtype)
    kernels = {"max": lambda: np.max(x), "sum": lambda: np.add.reduce(x, axis=None),
               "gemv": lambda: np.dot(x, v, out=out)}
    best, name = 0.0, ""
    for k, fn in kernels.items():
        fn()  # warm (page faults, BLAS threads)
        t = min(_timed(fn) for _ in range(repeats))
        if x.nbytes / t > best:
            best, name = x.nbytes / t, k
    return best, name


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=2000)
    ap.add_argument("--chunk-rows", type=int, default=8192)
    ap.add_argument("--device", default="cpu", help="cpu (numpy) or cuda (torch; memory ratio = peak GPU memory)")
    args = ap.parse_args()
    if args.device != "cpu":
        return gpu(args)
    rss0 = _status("VmRSS")
    x = np.empty((args.n, args.d), dtype=np.float32)
    rng = np.random.default_rng(0)
    for lo in range(0, args.n, 16384):  # generated in chunks so no temporary copy of the matrix exists
        blk = rng.standard_normal((min(16384, args.n - lo), args.d), dtype=np.float32)
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)
        x[lo:lo + len(blk)] = blk
    _, kernel = read_bandwidth(x)  # which read-only pass is fastest here
    read_pass = {"max": lambda: np.max(x), "sum": lambda: np.add.reduce(x, axis=None),
                 "gemv": lambda: np.dot(x, np.ones(x.shape[1], x.dtype))}[kernel]
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) so the bandwidth test does not count
    except OSError:
        pass
    rss1 = _status("VmRSS")
    per_center: list[float] = []
    floor_samples: list[float] = []
    mark = [time.thread_time()]

    def on_center(_n: int) -> None:
        now = time.thread_time()
        per_center.append(now - mark[0])
        if len(per_center) % 10 == 1:  # a read pass, interleaved: the same machine state as the greedy
            t = time.thread_time()
            read_pass()
            floor_samples.append(time.thread_time() - t)
        mark[0] = time.thread_time()

    t = time.perf_counter()
    mark[0] = time.thread_time()
    res = k_center_greedy(x, args.k, seed=0, chunk_rows=args.chunk_rows, progress=on_center)
    wall = time.perf_counter() - t
    peak = _status("VmHWM")
    s_per_center = statistics.median(per_center)
    floor = statistics.median(floor_samples)
    print(f"N={args.n} d={args.d} k={args.k}: {wall:.1f}s wall; per center {s_per_center * 1e3:.2f} ms CPU (median); "
          f"read pass ({kernel}) {floor * 1e3:.2f} ms CPU (median of {len(floor_samples)}, "
          f"{x.nbytes / floor / 1e9:.1f} GB/s); radius {res.radius_curve[0][1]:.3f} (1%) -> {res.radius:.3f} (100%); "
          f"matrix {x.nbytes / 2**20:.0f} MiB, peak RSS delta {(peak - rss0) / 2**20:.0f} MiB "
          f"(RSS before the greedy {(rss1 - rss0) / 2**20:.0f} MiB)")
    print(f"RESULT s_per_center={s_per_center:.4f} floor_ratio={s_per_center / floor:.2f} "
          f"read_gb_s={x.nbytes / floor / 1e9:.1f} rss_ratio={(x.nbytes + max(peak - rss1, 0)) / x.nbytes:.2f}")


def gpu_read_bandwidth(xt) -> float:
    """Bytes/s of the fastest read-only pass over the matrix on the GPU (10 timed repeats each)."""
    import torch

    v = torch.ones(xt.shape[1], device=xt.device, dtype=xt.dtype)
    best = 0.0
    for fn in (lambda: xt.amax(), lambda: xt.sum(), lambda: torch.mv(xt, v)):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        best = max(best, 10 * xt.numel() * xt.element_size() / (time.perf_counter() - t))
    return best


def gpu(args: argparse.Namespace) -> None:
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    bandwidth = gpu_read_bandwidth(torch.from_numpy(x).to(args.device))  # bytes READ per second
    torch.cuda.empty_cache()
    k_center_greedy(x[:1000], 10, device=args.device)  # warm-up
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    res = k_center_greedy(x, args.k, seed=0, device=args.device, chunk_rows=args.chunk_rows)
    secs = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated()
    ref = k_center_greedy(x, min(args.k, 200), seed=0, device="cpu")
    same = res.order[: len(ref.order)].tolist() == ref.order.tolist()
    floor = x.nbytes / bandwidth
    print(f"{torch.cuda.get_device_name()} N={args.n} d={args.d} k={args.k}: {secs:.2f}s (incl. upload), "
          f"{secs / args.k * 1e3:.3f} ms/center; floor {floor * 1e3:.3f} ms/center; first 200 centers equal "
          f"to numpy: {same}; peak GPU memory {peak / 2**20:.0f} MiB for a {x.nbytes / 2**20:.0f} MiB matrix")
    print(f"RESULT s_per_center={secs / args.k:.5f} floor_ratio={secs / args.k / floor:.2f} "
          f"gpu_mem_ratio={peak / x.nbytes:.2f} same_as_numpy={int(same)}")


if __name__ == "__main__":
    main()
