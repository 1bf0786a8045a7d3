"""Benchmark: grading 5,000 MATH (pred, gold) pairs built from real gold answers (half equivalent
rewrites, half wrong answers) with skymath's grader on all cores vs math-verify on the same pairs
(also on all cores, through a process pool). Prints pairs/s, the speedup, agreement between the
two, and each grader's precision/recall against the construction labels.

    .venv/bin/python bench/grade_speed.py [--pairs 5000] [--processes N]

Last line: RESULT pairs_per_s=<...> speedup_vs_math_verify=<...> agreement=<...>
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from multiprocessing import get_context

from skymath.paths import default_data_root


def rewrites(gold: str, rng: random.Random) -> list[str]:
    """Equivalent ways to write a gold answer (what models and graders actually meet)."""
    out = [f"\\boxed{{{gold}}}", f"${gold}$", f" {gold} ", gold.replace("\\frac", "\\dfrac")]
    if re.fullmatch(r"-?\d+", gold):
        n = int(gold)
        out += [f"{n}.0", f"{n:,}" if abs(n) >= 1000 else f"x = {n}", f"\\text{{{n}}}"]
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", gold)
    if m and int(m.group(3)) in (2, 4, 5, 8, 10, 20, 25):
        out.append(f"{m.group(1)}{int(m.group(2)) / int(m.group(3))}")
    if m:
        out.append(f"{m.group(1)}{m.group(2)}/{m.group(3)}")
    if gold.startswith("(") and gold.endswith(")"):
        out.append("\\left" + gold[:1] + gold[1:-1] + "\\right" + gold[-1:])
    if "^\\circ" in gold:
        out.append(gold.replace("^\\circ", ""))
    return out


def wrong(gold: str, other: str, rng: random.Random) -> str:
    """A wrong answer: a digit bumped, or another problem's (different) answer."""
    # digits of the value only (not a unit's exponent like `\text{ cm}^2`, which graders ignore)
    digits = [m for m in re.finditer(r"\d", gold) if not gold[: m.start()].endswith(("}^", "}^{"))]
    if digits and rng.random() < 0.6:
        d = rng.choice(digits)
        return gold[: d.start()] + str((int(d.group()) + rng.randint(1, 8)) % 10) + gold[d.end():]
    return other


def build_pairs(n: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    rows = [json.loads(line) for line in open(default_data_root() / "math_test.jsonl", encoding="utf-8")]
    golds = [r["answer"] for r in rows if r["answer"].strip()]
    rng = random.Random(seed)
    pairs: list[tuple[str, str, bool]] = []
    while len(pairs) < n:
        g = rng.choice(golds)
        if len(pairs) % 2 == 0:
            pairs.append((rng.choice(rewrites(g, rng)), g, True))
        else:
            o = rng.choice(golds)
            w = wrong(g, o, rng)
            if w.replace(" ", "") == g.replace(" ", ""):
                continue
            pairs.append((w, g, False))
    return pairs


def _mv_chunk(chunk: list[tuple[str, str]]) -> list[bool]:
    from math_verify import parse, verify

    out = []
    for pred, gold in chunk:
        try:
            out.append(bool(verify(parse(f"${gold}$"), parse(f"${pred}$"))))
        except Exception:  # noqa: BLE001 - a crash is a non-match, as in skymath
            out.append(False)
    return out


def math_verify_all(pairs: list[tuple[str, str]], processes: int) -> list[bool]:
    size = max(1, len(pairs) // (processes * 8))
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    with get_context("fork").Pool(processes) as pool:
        return [v for part in pool.map(_mv_chunk, chunks) for v in part]


def _pr(verdicts: list[bool], labels: list[bool]) -> tuple[float, float]:
    tp = sum(v and lab for v, lab in zip(verdicts, labels, strict=True))
    fp = sum(v and not lab for v, lab in zip(verdicts, labels, strict=True))
    precision = tp / (tp + fp) if tp + fp else 1.0
    return precision, tp / max(1, sum(labels))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    args = ap.parse_args()
    pairs = build_pairs(args.pairs)
    labels = [lab for _, _, lab in pairs]

    from skymath.evaluate.grade import grade_many

    t0 = time.perf_counter()
    ours = grade_many([(p, g, "math") for p, g, _ in pairs], processes=args.processes)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = math_verify_all([(p, g) for p, g, _ in pairs], args.processes)
    t_mv = time.perf_counter() - t0

    agree = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(pairs)
    po, ro = _pr(ours, labels)
    pm, rm = _pr(theirs, labels)
    print(f"pairs: {len(pairs)} ({sum(labels)} equivalent rewrites, {len(pairs) - sum(labels)} wrong), "
          f"processes: {args.processes}")
    print(f"skymath grader: {t_ours:.2f} s, {len(pairs) / t_ours:.0f} pairs/s, precision {po:.4f}, recall {ro:.4f}")
    print(f"math-verify:    {t_mv:.2f} s, {len(pairs) / t_mv:.0f} pairs/s, precision {pm:.4f}, recall {rm:.4f}")
    diff = [(p, g, lab, a, b) for (p, g, lab), a, b in zip(pairs, ours, theirs, strict=True) if a != b]
    for p, g, lab, a, b in diff[:8]:
        print(f"  disagree: pred={p!r} gold={g!r} label={lab} skymath={a} math-verify={b}")
    print(f"RESULT pairs_per_s={len(pairs) / t_ours:.1f} speedup_vs_math_verify={t_mv / t_ours:.2f} agreement={agree:.4f}")


if __name__ == "__main__":
    main()
