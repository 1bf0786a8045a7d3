"""One API key's rate budget shared by N concurrent synthesis shards (local executor).

N >= 8 shards of a real `synth` stage (the worker, the engine, the client: the production path)
run at once against ONE loopback server (tests/support/fault_server.py, in its own process) that
enforces an RPM and a TPM limit like a provider (token buckets holding `--burst-s` seconds of each
limit) and answers 429 + Retry-After beyond them. The shards share the limits through the run's
budget file (llm.rate_share: run). Measured at the server, over the window from the first to the
last accepted request:

  utilization = accepted rate / limit, for the binding limit (the larger of requests and tokens)
  rejected    = 429 answers / all requests the server received

The reference is the same run with `rate_share: process`: every shard believes it owns the whole
limit, as before this budget existed (skip with --no-baseline). Goal: utilization >= 0.9 with
<= 1% rejected.

Usage: python bench/rate_budget.py [--shards 8] [--rpm 1200] [--tpm 400000] [--seeds 320]
Last line: RESULT utilization=<...> rejected=<...> req_util=<...> tok_util=<...> baseline_rejected=<...>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

PARAMS = {"mix": {"metamath": 1, "evol": 1, "xwin": 1}, "match_gold": False, "few_shot": True,
          "evol": {"max_steps": 2}, "max_tokens": 200, "unit_concurrency": 16}


def start_server(rpm: float, tpm: float, latency: float, burst_s: float) -> tuple[subprocess.Popen, str]:
    srv = subprocess.Popen([sys.executable, str(REPO / "tests" / "support" / "fault_server.py"),
                            "--latency", str(latency), "--rpm", str(rpm), "--tpm", str(tpm),
                            "--burst-s", str(burst_s), "--responder", "synth"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = srv.stdout.readline().strip()
    assert line.startswith("READY "), line
    return srv, line.split()[1]


def server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/stats", timeout=10) as r:
        return json.loads(r.read())


def run_shards(tmp: Path, name: str, base_url: str, shards: int, seeds: list[dict], rpm: float, tpm: float,
               share: str) -> float:
    """A seeds stage + an N-shard synth stage through the local executor; returns wall seconds."""
    from skymath.config import config_from_dict, dump_config
    from skymath.executors.local import LocalExecutor
    from skymath.pipeline.rundir import RunDir

    seeds_file = tmp / f"{name}-seeds.jsonl"
    seeds_file.write_text("".join(json.dumps(s) + "\n" for s in seeds), encoding="utf-8")
    cfg = config_from_dict({
        "run": {"name": name, "root": str(tmp / "runs")},
        "executor": {"kind": "local", "max_parallel": shards},
        "llm": {"model": "fault-model", "endpoints": [{"base_url": base_url}], "rpm": rpm, "tpm": tpm,
                "rate_share": share, "concurrency": 8, "timeout_s": 30, "max_retries": 20,
                "backoff_base_s": 0.2, "backoff_max_s": 2.0, "api_key_env": "SKYMATH_BENCH_UNSET",
                "failure_tolerance": 1.0},
        "stages": {"seeds": {"kind": "support.synth_seeds", "params": {"file": str(seeds_file)}},
                   "synth": {"kind": "synth", "depends_on": ["seeds"], "num_shards": shards, "params": PARAMS}},
    })
    run = RunDir(cfg.run_dir)
    run.freeze_config(dump_config(cfg))
    t0 = time.perf_counter()
    rc = LocalExecutor(run, cfg, quiet=True).launch()
    assert rc == 0, f"run {name} failed (see {run.root}/logs)"
    return time.perf_counter() - t0


def main() -> None:
    import os

    from support.synth_helpers import real_seeds

    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rpm", type=float, default=1200)
    ap.add_argument("--tpm", type=float, default=400000)
    ap.add_argument("--seeds", type=int, default=320, help="seed problems (about 3.7 requests each)")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--burst-s", type=float, default=1.0)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    seeds = real_seeds(args.seeds // 2, args.seeds - args.seeds // 2)
    results = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        phases = [("shared", "run")] + ([] if args.no_baseline else [("baseline", "process")])
        for name, share in phases:
            # a fresh server per phase: its buckets and counters start full and at zero
            srv, base_url = start_server(args.rpm, args.tpm, args.latency, args.burst_s)
            try:
                before = server_stats(base_url)
                wall = run_shards(tmp, name, base_url, args.shards, seeds, args.rpm, args.tpm, share)
                st = server_stats(base_url)
            finally:
                srv.stdin.close()
                srv.wait(10)
            window = max(1e-9, st["accepted_last"] - st["accepted_first"])
            accepted, total = st["accepted"] - before["accepted"], st["total"] - before["total"]
            res = {"wall_s": wall, "window_s": window, "accepted": accepted, "total": total,
                   "rejected": st["rate_limited"], "rejected_frac": st["rate_limited"] / max(1, total),
                   "req_util": accepted / window / (args.rpm / 60),
                   "tok_util": st["accepted_tokens"] / window / (args.tpm / 60)}
            res["utilization"] = max(res["req_util"], res["tok_util"])
            results[name] = res
            print(f"{name:>8} ({share}): {args.shards} shards, wall {wall:.1f}s, window {window:.1f}s, "
                  f"accepted {accepted}, 429 {st['rate_limited']} of {total} ({res['rejected_frac']:.2%}), "
                  f"req util {res['req_util']:.3f}, tok util {res['tok_util']:.3f}", flush=True)
    s = results["shared"]
    line = (f"RESULT utilization={s['utilization']:.3f} rejected={s['rejected_frac']:.4f} "
            f"req_util={s['req_util']:.3f} tok_util={s['tok_util']:.3f} shards={args.shards} "
            f"rpm={args.rpm:g} tpm={args.tpm:g} requests={s['total']}")
    if "baseline" in results:
        b = results["baseline"]
        line += f" baseline_rejected={b['rejected_frac']:.4f} baseline_utilization={b['utilization']:.3f}"
    print(line)


if __name__ == "__main__":
    main()
