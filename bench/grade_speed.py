"""Benchmark: skymath's grader vs Math-Verify on MATH-test gold answers against model-style
predictions, reported on two subsets that are graded very differently:

  easy  pairs the string rules settle (`quick_equiv` decides: `\\boxed{}`, `$...$`, `\\dfrac`,
        1,000 = 1000, 0.5 = \\frac12, a bumped digit, another problem's answer)
  hard  pairs that need symbolic work (`quick_equiv` cannot decide): unevaluated arithmetic a
        model leaves in its answer (`3 \\cdot 4`, `2^{5}`, `\\binom{6}{2}`, `\\sqrt{49}`,
        `\\frac{3}{8}+\\frac{1}{8}`), radicals and pi written another way (`\\frac{\\sqrt{3}}{3}` for
        `\\frac{1}{\\sqrt{3}}`, `2\\sqrt{2}` for `\\sqrt{8}`), expanded/factored polynomials, and
        tuples/sets/intervals whose components need the same; half equivalent, half wrong
        (off by one, doubled, a radicand changed, a sign flipped).

Labels come from the construction (equivalent values are built from the gold's value by exact
sympy identities; wrong ones differ by construction). Both graders run on all cores with warm
workers (their start-up is measured separately), on the same pairs, timed the same way.
Reported per subset: pairs/s of each, the speedup, precision and recall against the labels,
and the agreement between the two graders.

    .venv/bin/python bench/grade_speed.py [--easy 2000] [--hard 2000] [--processes N]

Last line: RESULT hard_speedup_vs_math_verify=<x> hard_pairs_per_s=<..> hard_precision=<..> ...
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


# ---- easy pairs: what the string rules settle -----------------------------------------------------
def easy_rewrites(gold: str) -> list[str]:
    out = [f"\\boxed{{{gold}}}", f"${gold}$", f" {gold} ", gold.replace("\\frac", "\\dfrac")]
    if re.fullmatch(r"-?\d+", gold):
        n = int(gold)
        out += [f"{n}.0", f"{n:,}" if abs(n) >= 1000 else f"x = {n}", f"\\text{{{n}}}"]
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", gold)
    if m and int(m.group(3)) in (2, 4, 5, 8, 10, 20, 25):
        out.append(f"{m.group(1)}{int(m.group(2)) / int(m.group(3))}")
    if m:
        out.append(f"{m.group(1)}{m.group(2)}/{m.group(3)}")
    return out


def easy_wrong(gold: str, other: str, rng: random.Random) -> str:
    digits = [m for m in re.finditer(r"\d", gold) if not gold[: m.start()].endswith(("}^", "}^{"))]
    if digits and rng.random() < 0.6:
        d = rng.choice(digits)
        return gold[: d.start()] + str((int(d.group()) + rng.randint(1, 8)) % 10) + gold[d.end():]
    return other


# ---- hard pairs: model-style answers that need symbolic work ---------------------------------------------
def _int_forms(n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """Unevaluated arithmetic equal to n, and near misses."""
    import math

    eq, wrong = [], []
    divs = [a for a in range(2, int(abs(n) ** 0.5) + 1) if n % a == 0]
    if divs:
        a = rng.choice(divs)
        eq.append(f"{a} \\cdot {n // a}")
        wrong.append(f"{a} \\cdot {n // a + 1}")
        eq.append(f"{n // a} \\times {a}")
        wrong.append(f"{n // a - 1} \\times {a}")
    k = rng.randint(2, 40)
    eq.append(f"{n + k} - {k}")
    wrong.append(f"{n + k} - {k - 1}")
    if n > 0:
        eq.append(f"\\sqrt{{{n * n}}}")
        wrong.append(f"\\sqrt{{{n * n + 1}}}")
    if n > 2 and n & (n - 1) == 0:
        m = n.bit_length() - 1
        eq.append(f"2^{{{m}}}")
        wrong.append(f"2^{{{m + 1}}}")
    for m in range(3, 60):
        if m * (m - 1) // 2 == n:
            eq.append(f"\\binom{{{m}}}{{2}}")
            wrong.append(f"\\binom{{{m}}}{{3}}")
    for m in range(3, 12):
        if math.factorial(m) == n:
            eq.append(f"{m}!")
            wrong.append(f"{m + 1}!")
    return eq, wrong


def _frac_forms(p: int, q: int) -> tuple[list[str], list[str]]:
    eq = [f"\\frac{{{p - 1}}}{{{q}}}+\\frac{{1}}{{{q}}}", f"\\frac{{{p}}}{{{2 * q}}} \\cdot 2"]
    wrong = [f"\\frac{{{p}}}{{{q}}}+\\frac{{1}}{{{q}}}", f"\\frac{{{p}}}{{{2 * q}}} \\cdot 3"]
    if 0 < p < q:
        eq.append(f"1-\\frac{{{q - p}}}{{{q}}}")
        wrong.append(f"1-\\frac{{{q - p + 1}}}{{{q}}}")
    return eq, wrong


def _sym_forms(expr) -> tuple[list[str], list[str]]:
    """Other ways sympy (and models) write the same value; and values that differ."""
    import sympy

    eq: list[str] = []
    for f in (lambda e: e, sympy.radsimp, sympy.expand, sympy.factor, sympy.together, lambda e: 1 / (1 / e)):
        try:
            v = f(expr)
            eq.append(sympy.latex(v))
            eq.append(sympy.latex(v, order="old"))
        except Exception:  # noqa: BLE001 - a transform that does not apply
            continue
    wrong: list[str] = []
    try:
        wrong.append(sympy.latex(expr + 1))
        wrong.append(sympy.latex(2 * expr))
        wrong.append(sympy.latex(-expr))
        roots = sorted(expr.atoms(sympy.Pow), key=str)
        sq = [r for r in roots if r.exp == sympy.Rational(1, 2) and r.base.is_Integer]
        if sq:
            wrong.append(sympy.latex(expr.subs(sq[0], sympy.sqrt(sq[0].base + 1))))
    except Exception:  # noqa: BLE001
        pass
    return eq, wrong


def relation_forms(sides) -> list[tuple[str, bool]]:
    """An equation rearranged (everything on one side, scaled by -1 or 2), or with a constant moved."""
    import sympy

    from skymath.evaluate.grade import _parse

    lhs, rhs = (_parse(x) for x in sides)
    if lhs is None or rhs is None or not hasattr(lhs, "free_symbols"):
        return []
    d = sympy.expand(lhs - rhs)
    out = [(f"{sympy.latex(sympy.expand(-d))} = 0", True), (f"{sympy.latex(sympy.expand(2 * d))} = 0", True),
           (f"0 = {sympy.latex(d, order='old')}", True),
           (f"{sympy.latex(sympy.expand(d + 1))} = 0", False), (f"{sympy.latex(sympy.expand(-d + 1))} = 0", False)]
    return out


def scalar_forms(gold: str, rng: random.Random) -> tuple[list[str], list[str]]:
    from fractions import Fraction

    from skymath.evaluate.grade import _parse
    from skymath.evaluate.normalize import as_fraction, normalize

    n = normalize(gold)
    f = as_fraction(n)
    if f is not None:
        if f.denominator == 1 and abs(f) < 10**7:
            return _int_forms(int(f), rng)
        if abs(f.numerator) < 10**5 and f.denominator < 10**5:
            return _frac_forms(f.numerator, f.denominator) if f > 0 else ([], [])
        return [], []
    expr = _parse(n)
    if expr is None or getattr(expr, "is_Relational", False) or not hasattr(expr, "free_symbols"):
        return [], []
    try:
        if Fraction(str(expr)) is not None:
            return [], []
    except (ValueError, ZeroDivisionError):
        pass
    return _sym_forms(expr)


def hard_pairs(golds: list[str], rng: random.Random, n: int) -> list[tuple[str, str, bool]]:
    from skymath.evaluate.grade import quick_equiv
    from skymath.evaluate.normalize import normalize, split_top, structure

    out: list[tuple[str, str, bool]] = []
    seen: set[tuple[str, str]] = set()
    order = golds[:]
    rng.shuffle(order)
    for gold in order:
        node = structure(normalize(gold))
        if node.kind == "scalar":
            eq, wrong = scalar_forms(gold, rng)
            cands = [(p, True) for p in eq] + [(p, False) for p in wrong]
        elif node.kind in ("seq", "set") and all(c.kind == "scalar" for c in node.items):
            body = normalize(gold)
            inner = body[1:-1] if node.kind == "seq" else body
            parts = split_top(inner)
            cands = []
            for k, part in enumerate(parts):
                eq, wrong = scalar_forms(part, rng)
                for p, lab in [(x, True) for x in eq[:2]] + [(x, False) for x in wrong[:2]]:
                    new = parts[:k] + [p] + parts[k + 1:]
                    text = ", ".join(new)
                    cands.append((f"{body[0]}{text}{body[-1]}" if node.kind == "seq" else text, lab))
        elif node.kind == "relation" and node.text == "=" and len(node.items) == 2:
            cands = relation_forms(node.items)
        else:
            continue
        rng.shuffle(cands)
        picked = {True: 0, False: 0}
        for pred, lab in cands:
            if picked[lab] >= 2 or (pred, gold) in seen or pred.replace(" ", "") == gold.replace(" ", ""):
                continue
            if quick_equiv(pred, gold, "math") is not None:
                continue  # the string rules settle it: not a hard pair
            seen.add((pred, gold))
            out.append((pred, gold, lab))
            picked[lab] += 1
    rng.shuffle(out)
    trues = [p for p in out if p[2]][: n // 2]
    falses = [p for p in out if not p[2]][: n - len(trues)]
    pairs = trues + falses
    rng.shuffle(pairs)
    return pairs


def easy_pairs(golds: list[str], rng: random.Random, n: int) -> list[tuple[str, str, bool]]:
    from skymath.evaluate.grade import quick_equiv

    pairs: list[tuple[str, str, bool]] = []
    while len(pairs) < n:
        g = rng.choice(golds)
        if len(pairs) % 2 == 0:
            p, lab = rng.choice(easy_rewrites(g)), True
        else:
            p, lab = easy_wrong(g, rng.choice(golds), rng), False
            if p.replace(" ", "") == g.replace(" ", ""):
                continue
        if quick_equiv(p, g, "math") is None:
            continue
        pairs.append((p, g, lab))
    return pairs


# ---- Math-Verify, warm, on all cores --------------------------------------------------------------------------
def _mv_init() -> None:
    from math_verify import parse, verify

    verify(parse("$\\frac{1}{2}$"), parse("$0.5$"))  # imports and first-use work, off the clock


def _mv_chunk(chunk: list[tuple[str, str]]) -> list[bool]:
    from math_verify import parse, verify

    out = []
    for pred, gold in chunk:
        try:
            out.append(bool(verify(parse(f"${gold}$"), parse(f"${pred}$"))))
        except Exception:  # noqa: BLE001 - a crash is a non-match, as in skymath
            out.append(False)
    return out


def _chunks(pairs: list, processes: int) -> list[list]:
    size = max(1, len(pairs) // (processes * 8))
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def _pr(verdicts: list[bool], labels: list[bool]) -> tuple[float, float]:
    tp = sum(v and lab for v, lab in zip(verdicts, labels, strict=True))
    fp = sum(v and not lab for v, lab in zip(verdicts, labels, strict=True))
    return (tp / (tp + fp) if tp + fp else 1.0), tp / max(1, sum(labels))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--easy", type=int, default=2000)
    ap.add_argument("--hard", type=int, default=2000)
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    ap.add_argument("--show", type=int, default=6, help="disagreements to print per subset")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(default_data_root() / "math_test.jsonl", encoding="utf-8")]
    golds = [r["answer"] for r in rows if r["answer"].strip()]
    t0 = time.perf_counter()
    subsets = {"easy": easy_pairs(golds, random.Random(0), args.easy),
               "hard": hard_pairs(golds, random.Random(1), args.hard)}
    print(f"built pairs in {time.perf_counter() - t0:.1f} s: " + ", ".join(
        f"{k} {len(v)} ({sum(lab for *_, lab in v)} equivalent)" for k, v in subsets.items()))
    from skymath.evaluate.fastnum import fast_equiv
    from skymath.evaluate.normalize import normalize, structure

    kinds: dict[str, int] = {}
    fast = scalars = 0
    for p, g, _ in subsets["hard"]:
        k = structure(normalize(g)).kind
        kinds[k] = kinds.get(k, 0) + 1
        if k == "scalar":
            scalars += 1
            fast += fast_equiv(normalize(g), normalize(p)) is not None
    print(f"hard pairs by gold shape: {kinds}; the fast evaluator decides {fast} of {scalars} scalar pairs "
          "(the rest, and relations, go through sympy)")

    from skymath.evaluate.grade import grade_many
    from skymath.evaluate.grade_pool import GradePool

    t0 = time.perf_counter()
    pool = GradePool(args.processes).start()
    pool.grade([("\\sqrt{8}", "2\\sqrt{2}", "math")] * args.processes)  # wait until every worker is warm
    ours_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    mv_pool = get_context("fork").Pool(args.processes, initializer=_mv_init)
    mv_pool.map(_mv_chunk, [[("1", "1")]] * args.processes)
    mv_start = time.perf_counter() - t0
    print(f"start-up (not timed below): skymath graders {ours_start:.1f} s, math-verify pool {mv_start:.1f} s; "
          f"processes: {args.processes}")

    result: dict[str, float] = {}
    try:
        for name, pairs in subsets.items():
            labels = [lab for *_, lab in pairs]
            t0 = time.perf_counter()
            ours = grade_many([(p, g, "math") for p, g, _ in pairs], pool=pool)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            theirs = [v for part in mv_pool.map(_mv_chunk, _chunks([(p, g) for p, g, _ in pairs], args.processes))
                      for v in part]
            t_mv = time.perf_counter() - t0
            po, ro = _pr(ours, labels)
            pm, rm = _pr(theirs, labels)
            agree = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(pairs)
            print(f"[{name}] {len(pairs)} pairs")
            print(f"  skymath:     {t_ours:7.2f} s {len(pairs) / t_ours:8.0f} pairs/s  precision {po:.4f}  recall {ro:.4f}")
            print(f"  math-verify: {t_mv:7.2f} s {len(pairs) / t_mv:8.0f} pairs/s  precision {pm:.4f}  recall {rm:.4f}")
            print(f"  speedup {t_mv / t_ours:.2f}x, agreement {agree:.4f}")
            diff = [(p, g, lab, a, b) for (p, g, lab), a, b in zip(pairs, ours, theirs, strict=True) if a != b]
            for p, g, lab, a, b in diff[: args.show]:
                print(f"    disagree: pred={p!r} gold={g!r} label={lab} skymath={a} math-verify={b}")
            wrong_ours = [(p, g) for (p, g, lab), a in zip(pairs, ours, strict=True) if a and not lab]
            for p, g in wrong_ours[:3]:
                print(f"    skymath accepted a wrong answer: pred={p!r} gold={g!r}")
            result.update({f"{name}_speedup_vs_math_verify": t_mv / t_ours, f"{name}_pairs_per_s": len(pairs) / t_ours,
                           f"{name}_precision": po, f"{name}_recall": ro, f"{name}_mv_precision": pm,
                           f"{name}_mv_recall": rm, f"{name}_agreement": agree})
    finally:
        pool.close()
        mv_pool.terminate()
    keys = ["hard_speedup_vs_math_verify", "hard_pairs_per_s", "hard_precision", "hard_recall", "hard_mv_precision",
            "hard_agreement", "easy_speedup_vs_math_verify", "easy_precision", "easy_agreement"]
    print("RESULT " + " ".join(f"{k}={result[k]:.4g}" if "pairs" in k else f"{k}={result[k]:.4f}" for k in keys))


if __name__ == "__main__":
    main()
