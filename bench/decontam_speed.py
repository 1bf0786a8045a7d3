"""Decontamination speed, fair: the fast n-gram filter vs the plain definition (skymath.decontam.
reference), each side's index BUILD and SCAN timed separately, on the same samples, with the same
timer (process CPU time: both sides are single-threaded, and other load on the machine does not
skew CPU time the way it skews wall time).

200K synthetic samples are built from real MATH/GSM8K train text (recombined problems and
solutions; 1% carry a 40-word span of a test solution, 0.5% a test problem); the test sets are
GSM8K + MATH test (6,319 items). Both sides build their index from scratch (the fast filter's
on-disk index cache is off). The fast scan runs in a compiled kernel (numba): compiling it is a
once-per-installation cost (numba caches it on disk), done before the timers and reported as jit_s.

  speedup_vs_ref = (ref build + ref scan) / (fast build + fast scan)    (target >= 10)
  speedup_build, speedup_scan: the two parts alone
  tokenize_ratio = fast scan time / time of `re.findall(r"\\w+", text.lower())` over the same texts

    python bench/decontam_speed.py [--samples 200000] [--ref-samples 0 (= all)]
"""

from __future__ import annotations

import argparse
import random
import time

from skymath.decontam import Decontaminator, ReferenceIndex, fastscan, load_benchmark
from skymath.decontam.ngram import WORD_RE
from skymath.paths import default_data_root
from skymath.records import read_jsonl


def build_samples(n: int, seed: int = 0) -> list[tuple[str, str]]:
    root = default_data_root()
    math = list(read_jsonl(root / "math_train.jsonl.gz"))
    gsm = list(read_jsonl(root / "gsm8k_train.jsonl"))
    pool = [(r["problem"], r["solution"]) for r in math] + [(r["question"], r["answer"]) for r in gsm]
    test = list(read_jsonl(root / "math_test.jsonl"))
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, s = rng.choice(pool)
        p2, s2 = rng.choice(pool)
        problem = f"{p} Also, {p2.split('.')[0]}." if rng.random() < 0.5 else p.replace("1", str(rng.randint(2, 9)))
        response = f"{s}\n{s2[: len(s2) // 2]}\nThe answer is {rng.randint(0, 999)}"
        u = rng.random()
        if u < 0.01:
            w = rng.choice(test)["solution"].split()
            i = rng.randrange(max(1, len(w) - 40))
            response += " " + " ".join(w[i:i + 40])
        elif u < 0.015:
            problem = rng.choice(test)["problem"]
        out.append((problem, response))
    return out


def fast_scan(dec: Decontaminator, samples: list[tuple[str, str]], batch: int) -> list[bool]:
    out: list[bool] = []
    for i in range(0, len(samples), batch):
        chunk = samples[i:i + batch]
        out += [m is not None for m in dec.check([p for p, _ in chunk], [r for _, r in chunk])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--ref-samples", type=int, default=0, help="samples both sides are compared on (0 = all)")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4096)
    args = ap.parse_args()
    root = default_data_root()
    samples = build_samples(args.samples)
    items = load_benchmark("gsm8k", root) + load_benchmark("math", root)
    words = sum(len(WORD_RE.findall(p)) + len(WORD_RE.findall(r)) for p, r in samples[:2000]) / 2000
    print(f"{len(samples)} samples, ~{words:.0f} words each; {len(items)} benchmark items; "
          f"compiled kernel: {'yes' if fastscan.HAVE_NUMBA else 'no (numpy fallback)'}")
    jit_s = fastscan.warm_up()

    t = time.process_time()
    dec = Decontaminator(items, n=args.n)  # no cache_path: built from scratch
    build_fast = time.process_time() - t
    t = time.process_time()
    ref = ReferenceIndex(items, args.n)
    build_ref = time.process_time() - t

    t = time.process_time()
    for p, r in samples:
        WORD_RE.findall(p.lower())
        WORD_RE.findall(r.lower())
    t_tok = time.process_time() - t
    t = time.process_time()
    fast_all = fast_scan(dec, samples, args.batch)
    scan_fast_all = time.process_time() - t

    sub = samples[: args.ref_samples] if args.ref_samples else samples
    if len(sub) == len(samples):
        scan_fast, fast_sub = scan_fast_all, fast_all
    else:
        t = time.process_time()
        fast_sub = fast_scan(dec, sub, args.batch)
        scan_fast = time.process_time() - t
    t = time.process_time()
    ref_sub = [ref.contaminated(p, r) for p, r in sub]
    scan_ref = time.process_time() - t
    assert fast_sub == ref_sub, "fast filter disagrees with the reference"

    speedup = (build_ref + scan_ref) / (build_fast + scan_fast)
    print(f"index build: reference {build_ref:.2f}s, fast {build_fast:.2f}s; scan of {len(sub)} samples: "
          f"reference {scan_ref:.2f}s, fast {scan_fast:.2f}s ({sum(fast_sub)} contaminated, identical decisions); "
          f"plain tokenizing {t_tok:.2f}s vs fast scan {scan_fast_all:.2f}s for all {len(samples)}; "
          f"kernel compile/load {jit_s:.2f}s (once per installation / process)")
    print(f"RESULT speedup_vs_ref={speedup:.1f} speedup_build={build_ref / build_fast:.1f} "
          f"speedup_scan={scan_ref / scan_fast:.1f} build_ref_s={build_ref:.2f} build_fast_s={build_fast:.2f} "
          f"scan_ref_s={scan_ref:.2f} scan_fast_s={scan_fast:.2f} tokenize_ratio={scan_fast_all / t_tok:.2f} "
          f"samples_per_s={len(samples) / scan_fast_all:.0f} jit_s={jit_s:.2f}")


if __name__ == "__main__":
    main()
