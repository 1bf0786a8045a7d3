"""k-center greedy on CPU: seconds per center vs the memory-bandwidth floor, and peak memory.

N=200K random unit vectors, d=384 (MiniLM size), k=2K. Each new center costs one pass over the
float32 matrix (N*d*4 bytes), so the floor per center is those bytes / measured copy bandwidth.
  floor_ratio = s_per_center / floor        (1.0 = bandwidth bound)
  rss_ratio   = (matrix bytes + peak RSS growth during the selection) / matrix bytes   (target <= 1.5)

    python bench/coreset_speed.py [--n 200000] [--d 384] [--k 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skymath.select.coreset import k_center_greedy


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


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
    dst = np.empty_like(x[: args.n // 4])
    src = x[: args.n // 4]
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    bandwidth = src.nbytes / best  # bytes of the source read (and written) per second
    del dst
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) so the copy test does not count
    except OSError:
        pass
    rss1 = _status("VmRSS")
    t = time.perf_counter()
    res = k_center_greedy(x, args.k, seed=0, chunk_rows=args.chunk_rows)
    secs = time.perf_counter() - t
    peak = _status("VmHWM")
    s_per_center = secs / args.k
    floor = x.nbytes / bandwidth
    print(f"N={args.n} d={args.d} k={args.k}: {secs:.1f}s, {s_per_center * 1e3:.2f} ms/center; copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s -> floor {floor * 1e3:.2f} ms/center; radius {res.radius_curve[0][1]:.3f} "
          f"(1%) -> {res.radius:.3f} (100%); matrix {x.nbytes / 2**20:.0f} MiB, peak RSS delta "
          f"{(peak - rss0) / 2**20:.0f} MiB (RSS before the greedy {(rss1 - rss0) / 2**20:.0f} MiB)")
    print(f"RESULT s_per_center={s_per_center:.4f} floor_ratio={s_per_center / floor:.2f} "
          f"rss_ratio={(x.nbytes + max(peak - rss1, 0)) / x.nbytes:.2f}")


def gpu(args: argparse.Namespace) -> None:
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = torch.empty(x.nbytes // 4, dtype=torch.float32, device=args.device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    bandwidth = 10 * x.nbytes / (time.perf_counter() - t)  # bytes read per second (as many written)
    del a, b
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
