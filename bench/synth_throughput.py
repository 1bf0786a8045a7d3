"""Client throughput: requests/s at concurrency C against a loopback server with fixed latency L,
divided by the ideal C/L (target >= 0.9), and the client's CPU time per 1,000 requests.

The server (tests/support/fault_server.py, no rate limit) runs in a subprocess so its CPU does not
count against the client. The same requests are then sent through the run-wide rate budget (limits
far above what the server does, so it costs CPU but never waits): its per-request overhead.
Usage: python bench/synth_throughput.py [--requests 2000] [--concurrency 64] [--latency 0.2].
Last line: RESULT ratio=<achieved/ideal> rps=<...> cpu_ms_per_1k=<...> budget_ratio=<...> budget_cpu_ms_per_1k=<...>
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    from skymath.config.llm import Endpoint, LLMConfig
    from skymath.synth.client import ChatRequest, LLMClient

    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()

    srv = subprocess.Popen([sys.executable, str(REPO / "tests" / "support" / "fault_server.py"),
                            "--latency", str(args.latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = srv.stdout.readline().strip()
    assert line.startswith("READY "), line
    base_url = line.split()[1]
    try:
        import tempfile

        out = {}
        with tempfile.TemporaryDirectory() as rate_dir:
            # "budget": the same requests through the run-wide rate budget (a budget file, one lock
            # per batch of slots) with limits far above what the loopback server can do, so the
            # budget costs CPU but never waits: the per-request overhead of sharing the key's limits
            for name, limits in (("plain", {}), ("budget", {"rpm": 10**8, "tpm": 10**11})):
                llm = LLMConfig(model="bench", concurrency=args.concurrency, cache=False, timeout_s=30,
                                api_key_env="SKYMATH_BENCH_UNSET", **limits)
                client = LLMClient.from_config(llm, endpoints=[Endpoint(base_url=base_url)], rate_dir=rate_dir)
                warm = [ChatRequest(f"w{i}", [{"role": "user", "content": f"warm {i}"}])
                        for i in range(args.concurrency)]
                client.run_batch(warm)  # connections open, imports done
                reqs = [ChatRequest(f"r{i}", [{"role": "user", "content": f"problem {i}: what is {i} + {i}?"}])
                        for i in range(args.requests)]
                c0, t0 = cpu_s(), time.perf_counter()
                res = client.run_batch(reqs)
                out[name] = (time.perf_counter() - t0, cpu_s() - c0, sum(r.ok for r in res))
    finally:
        srv.stdin.close()
        srv.wait(10)
    ideal = args.concurrency / args.latency
    for name, (wall, cpu, ok) in out.items():
        print(f"{name}: requests={args.requests} ok={ok} concurrency={args.concurrency} latency={args.latency}s "
              f"wall={wall:.2f}s cpu={cpu:.2f}s rps={ok / wall:.1f} ideal_rps={ideal:.1f} "
              f"cpu_ms_per_1k={1000 * cpu / max(1, ok) * 1000:.0f}")
    wall, cpu, ok = out["plain"]
    bwall, bcpu, bok = out["budget"]
    print(f"RESULT ratio={ok / wall / ideal:.3f} rps={ok / wall:.1f} cpu_ms_per_1k={1000 * cpu / max(1, ok) * 1000:.0f} "
          f"budget_ratio={bok / bwall / ideal:.3f} budget_cpu_ms_per_1k={1000 * bcpu / max(1, bok) * 1000:.0f}")


if __name__ == "__main__":
    main()
