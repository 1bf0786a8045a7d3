"""The fast exact-first evaluator the grader tries before sympy: what it decides, what it leaves
to sympy, and that it never accepts a wrong value that sympy would reject."""

from __future__ import annotations

import pytest

from skymath.evaluate.fastnum import fast_equiv, fast_relation_equiv
from skymath.evaluate.grade import equiv_unlimited
from skymath.evaluate.normalize import normalize


def _fast(pred: str, gold: str) -> bool | None:
    return fast_equiv(normalize(gold), normalize(pred))


@pytest.mark.parametrize(("pred", "gold", "want"), [
    ("3 \\cdot 4", "12", True),
    ("3 \\times 5", "12", False),
    ("2^{10}", "1024", True),
    ("2^{11}", "1024", False),
    ("\\binom{6}{2}", "15", True),
    ("5!", "120", True),
    ("\\sqrt{49}", "7", True),
    ("\\frac{49}{8} \\cdot 2", "12.25", True),
    ("\\frac{3}{8}+\\frac{1}{8}", "\\frac12", True),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("2\\sqrt{3}", "\\sqrt{8}", False),
    ("\\frac{3\\pi}{2}", "\\frac32\\pi", True),
    ("\\sqrt[3]{8}", "2", None),  # n-th roots: sympy
    ("(x+1)^2", "x^2+2x+1", True),
    ("(x+1)^2", "x^2+2x+2", False),
    ("\\frac{2x-7}{(x+1)(x-2)}", "\\frac{2x}{x^2-x-2}-\\frac{7}{x^2-x-2}", True),
    ("\\sqrt{x}\\sqrt{x}", "x", True),
    ("2^{2005}+1", "2^{2005}", False),  # exact values: identical or not
    ("\\frac{1}{100!+1}", "\\frac{1}{100!}", False),
    ("\\sqrt{2}+10^{-60}", "\\sqrt{2}", False),  # agrees to 60 digits, not to 590
    ("\\sqrt{2}^{2005}+1", "\\sqrt{2}^{2005}", False),
    ("1.4142135623730950488016887242096980785696", "\\sqrt{2}", False),  # a decimal is not sqrt 2
    ("3.14159265358979323846264338327950288", "\\pi", False),
    ("\\sqrt{2}\\cdot\\sqrt{2}", "2", True),
    ("3\\frac{1}{2}", "\\frac72", None),  # a mixed number or 3 * 1/2: ambiguous, sympy decides
    ("1/2x", "\\frac{x}{2}", None),  # a/bc is ambiguous
    ("2e", "2e", None),  # e and i are not variables here
    ("x", "y", None),  # different letters: sympy decides
    ("\\sin x", "\\sin x", None),  # functions: sympy
    ("2^{2^{2^{10}}}", "2", None),  # a power tower is refused, not computed
    ("9" * 5000, "1", None),  # a huge literal is refused, not parsed
])
def test_fast_evaluator(pred: str, gold: str, want: bool | None) -> None:
    assert _fast(pred, gold) is want


@pytest.mark.parametrize(("pred", "gold", "want"), [
    (("-4x+5y", "50"), ("4x-5y", "-50"), True),
    (("8x-10y", "-100"), ("4x-5y", "-50"), True),
    (("4x-5y", "-51"), ("4x-5y", "-50"), False),
])
def test_fast_relations(pred, gold, want) -> None:
    assert fast_relation_equiv(gold, "=", pred, "=") is want


def test_inequalities_keep_their_direction() -> None:
    assert fast_relation_equiv(("x", "3"), "\\le", ("2x", "6"), "\\le") is True
    assert fast_relation_equiv(("x", "3"), "\\le", ("-2x", "-6"), "\\le") is False
    assert fast_relation_equiv(("x", "3"), "<", ("3", "x"), ">") is True
    assert fast_relation_equiv(("x", "3"), "<", ("x", "3"), "\\le") is False


def test_fast_verdicts_agree_with_sympy_on_real_golds(data_root) -> None:
    """Where the fast evaluator decides, sympy's path (the grader without it) gives the same
    verdict: real MATH golds against rewrites and near misses."""
    import json

    import skymath.evaluate.grade as grade

    rows = [json.loads(x) for x in open(data_root / "math500_test.jsonl", encoding="utf-8")]
    pairs = []
    for r in rows:
        g = r["answer"]
        pairs += [(f"{g}+0", g), (f"2\\cdot({g})", g), (f"({g})\\cdot\\frac{{4}}{{4}}", g), (f"{g}+1", g)]
    decided = [(p, g, equiv_unlimited(p, g, "math")) for p, g in pairs if _fast(p, g) is not None]
    assert len(decided) > 400 and sum(v for *_, v in decided) > 200
    original = grade.fast_equiv
    try:
        grade.fast_equiv = lambda g, p: None  # the sympy path alone
        for p, g, v in decided[::3]:
            assert equiv_unlimited(p, g, "math") is v, (p, g)
    finally:
        grade.fast_equiv = original
