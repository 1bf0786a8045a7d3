"""Decontamination speed: the fast n-gram filter vs merely tokenizing, and vs the plain reference.

200K synthetic samples are built from real MATH/GSM8K train text (recombined problems and
solutions; 1% carry a 40-word span of a test solution, 0.5% a test problem). Ratios:
  tokenize_ratio  = filter time / time of `re.findall(r"\\w+", text.lower())` over the same texts (target <= 2)
  speedup_vs_ref  = samples/s of the filter / samples/s of the plain definition (target >= 10)
Times are process CPU time (the code is single-threaded), so other load on the machine does not skew them.

    python bench/decontam_speed.py [--samples 200000] [--ref-samples 20000]
"""

from __future__ import annotations

import argparse
import random
import time

from skymath.decontam import Decontaminator, load_benchmark, reference_contaminated
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--ref-samples", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4096)
    args = ap.parse_args()
    root = default_data_root()
    samples = build_samples(args.samples)
    items = load_benchmark("gsm8k", root) + load_benchmark("math", root)
    words = sum(len(WORD_RE.findall(p)) + len(WORD_RE.findall(r)) for p, r in samples[:2000]) / 2000
    print(f"{len(samples)} samples, ~{words:.0f} words each; {len(items)} benchmark items")

    t = time.process_time()
    dec = Decontaminator(items, n=args.n)
    t_index = time.process_time() - t

    t = time.process_time()
    for p, r in samples:
        WORD_RE.findall(p.lower())
        WORD_RE.findall(r.lower())
    t_tok = time.process_time() - t

    t = time.process_time()
    removed = 0
    for i in range(0, len(samples), args.batch):
        chunk = samples[i:i + args.batch]
        removed += sum(m is not None for m in dec.check([p for p, _ in chunk], [r for _, r in chunk]))
    t_fast = time.process_time() - t

    sub = samples[: args.ref_samples]
    t = time.process_time()
    ref = reference_contaminated(sub, items, args.n)
    t_ref = time.process_time() - t
    t = time.process_time()
    fast_sub = []
    for i in range(0, len(sub), args.batch):
        chunk = sub[i:i + args.batch]
        fast_sub += [m is not None for m in dec.check([p for p, _ in chunk], [r for _, r in chunk])]
    t_fast_sub = time.process_time() - t
    assert fast_sub == ref, "fast filter disagrees with the reference"

    ratio = t_fast / t_tok
    speedup = t_ref / t_fast_sub  # same samples, same batches
    print(f"index build {t_index:.2f}s; tokenize {t_tok:.2f}s; filter {t_fast:.2f}s ({removed} removed); "
          f"reference {t_ref:.2f}s vs filter {t_fast_sub:.2f}s on the first {len(sub)} (same split: yes)")
    print(f"RESULT tokenize_ratio={ratio:.2f} speedup_vs_ref={speedup:.1f} samples_per_s={len(samples) / t_fast:.0f}")


if __name__ == "__main__":
    main()
