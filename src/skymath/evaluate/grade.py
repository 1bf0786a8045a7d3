"""Answer equivalence: `is_equiv(pred, gold, benchmark)` and `grade_many(pairs)`.

Precision first: normalization and structure (tuples ordered, sets/solution lists unordered,
intervals, unions, matrices, relations) are compared exactly; symbolic equality uses sympy via
`latex2sympy2_extended` with decimals turned into exact rationals, so 3.14 is never \\pi and
integers must match exactly (only float noise of irrational values is tolerated, 1e-12 rel).

Every pair gets a hard time limit (default 1 s): the symbolic work runs in grader processes
that a parent kills and replaces on overrun (signal.alarm alone cannot stop C-level bignum
work such as 10^{10^{10}}, and it does not work outside the main thread). `grade_many` spreads
pairs over all cores.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from fractions import Fraction
from functools import lru_cache

from skymath.evaluate.extract import strip_boxed
from skymath.evaluate.fastnum import fast_equiv, fast_relation_equiv
from skymath.evaluate.normalize import Node, as_fraction, normalize, structure

BENCHMARKS = ("gsm8k", "math")
DEFAULT_TIMEOUT_S = 1.0

_IN_GRADER = False  # set in grader worker processes: symbolic work runs in-process there


class GradeTimeout(BaseException):
    """Raised by the soft alarm inside a grader process (BaseException: sympy can't swallow it)."""


@contextmanager
def _soft_alarm(seconds: float):
    """SIGALRM-based limit on the main thread of a grader process; a no-op elsewhere."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_sig, _frame):
        raise GradeTimeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- GSM8K ----------------------------------------------------------------------------------------

_GSM_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _gsm8k_number(text: str) -> Fraction | None:
    s = strip_boxed(text)
    s = re.sub(r"\\!|\\,|\{,\}|\\\$|\$|\\text\{[^{}]*\}", "", s)
    s = re.sub(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", s)
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    found = list(_GSM_NUM.finditer(s))
    if not found:
        return None
    if _hedged(s, found):
        return None
    m = found[0]
    tok = m.group(0).rstrip(",")
    if "," in tok:
        if not re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", tok):
            tok = tok.split(",")[0]
        tok = tok.replace(",", "")
    try:
        return Fraction(tok)
    except (ValueError, ZeroDivisionError):
        return None


_PLAIN_GOLD = re.compile(r"\s*-?\d[\d,]*(?:\.\d+)?\s*")  # a GSM8K-style gold (else graded as MATH)
_HEDGE_GAP = re.compile(r"\s*(?:,|;|/|\\pm|±|\bor\b|\band\b|\bto\b|-|–)\s*", re.IGNORECASE)


def _hedged(s: str, found: list[re.Match]) -> bool:
    """Two different numbers offered as alternatives (`5 or 6`, `5, 6`, `5-6`): not one answer."""
    for a in found:  # `5,6` (not a thousands separator) is a list
        tok = a.group(0).rstrip(",")
        if "," in tok and not re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", tok) and len(set(tok.split(","))) > 1:
            return True
    for a, b in zip(found, found[1:], strict=False):
        gap = s[a.start() + len(a.group(0).rstrip(",")) : b.start()]
        if _HEDGE_GAP.fullmatch(gap) or (not gap.strip() and b.group(0).startswith("-")):
            if a.group(0).rstrip(",") != b.group(0).lstrip("-").rstrip(","):
                return True
    return False


def _gsm8k_equiv(pred: str, gold: str) -> bool:
    g = _gsm8k_number(gold)
    p = _gsm8k_number(pred)
    return g is not None and p is not None and g == p


# ---- MATH: quick (pure string) decisions -------------------------------------------------------------

_WORD = re.compile(r"^[A-Za-z]+$")
_BASE_NUMERAL = re.compile(r"^[0-9A-Za-z]+_\{?\d+\}?$")
_FUNC_WORDS = {"pi", "infty", "sqrt", "frac"}


def _quick_scalar(g: str, p: str) -> bool | None:
    """Decide without sympy where possible: True/False, or None (needs symbolic)."""
    if g == p:
        return True
    if _BASE_NUMERAL.match(g) or _BASE_NUMERAL.match(p):  # 204_5: a numeral in base 5, not 204
        return g.replace("{", "").replace("}", "") == p.replace("{", "").replace("}", "")
    fg, fp = as_fraction(g), as_fraction(p)
    if fg is not None and fp is not None:
        return fg == fp
    for a, b in ((g, p), (p, g)):
        if _WORD.match(a) and a.lower() not in _FUNC_WORDS:
            if len(a) == 1 or len(b) == 1:
                return a == b
            return a.lower() == b.lower()
    if not g or not p:
        return False
    return None


_BIG_POW = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\{?\s*\d{5,}|\^\s*\{?\s*\(?\s*\d{4,}\s*!|\d{400,}|\d\s*!\s*!")


def _too_big(s: str) -> bool:
    """Inputs whose evaluation could explode (power towers, huge exponents or factorials)."""
    return bool(_BIG_POW.search(s)) or s.count("^") > 12 or len(s) > 600


def _exact_decimals(s: str) -> str:
    """`4.5` -> `\\frac{45}{10}` so sympy compares exactly (3.14 != \\pi, 0.1+0.2 == 0.3)."""

    def rep(m: re.Match) -> str:
        whole, frac = m.group(1), m.group(2)
        return "(\\frac{" + str(int(whole + frac)) + "}{" + str(10 ** len(frac)) + "})"  # braces would be a set

    return re.sub(r"(?<![\d.])(\d+)\.(\d+)(?![\d.])", rep, s)


@lru_cache(maxsize=8192)
def _parse(s: str):
    """LaTeX -> sympy (None on failure); cached per process (golds repeat across models)."""
    from latex2sympy2_extended import latex2sympy

    try:
        return latex2sympy(_exact_decimals(s))
    except GradeTimeout:
        raise
    except Exception:  # noqa: BLE001 - any parse failure means "cannot prove equal"
        return None


DIFF_DIGITS = 600  # working precision (digits) up to which a difference of irrational values is resolved
ZERO_BOUND = 1e-50  # an unresolved difference counts as zero only when bounded below this


def _exact_rational(x):
    """x as an exact sympy Rational when its value is rational (unevaluated factorials and powers
    are evaluated exactly), else None."""
    try:
        v = x.doit()
    except GradeTimeout:
        raise
    except Exception:  # noqa: BLE001 - cannot evaluate: not known to be rational
        return None
    return v if getattr(v, "is_Rational", False) else None


def _difference_is_zero(x, y) -> bool:
    """x - y evaluated with adaptive precision (sympy evalf tracks cancellation): zero only when no
    digit survives at DIFF_DIGITS digits and the error bound is tiny. This compares the
    DIFFERENCE, never a relative error of the values: 2^2005 + sqrt(2) is not 2^2005 + sqrt(2) + 1."""
    import sympy

    try:
        d = sympy.N(x - y, 30, maxn=DIFF_DIGITS)
        if d == 0:
            return True
        if not isinstance(d, sympy.Float):
            return False
        # a Float with no significant bit is "0 within a bound": accept only a tiny bound
        return bool(d._prec <= 1 and abs(float(sympy.Float(d, 3))) < ZERO_BOUND)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
        return False


def _const_equal(x, y) -> bool:
    """Two constant expressions: exactly when both values are rational (large powers that differ
    by one, reciprocals of large factorials stay distinct), else by their evaluated difference."""
    import sympy

    rx, ry = _exact_rational(x), _exact_rational(y)
    if rx is not None and ry is not None:
        return bool(rx == ry)
    try:
        if x.is_infinite or y.is_infinite or (rx is None and ry is None and (x.is_finite is False or y.is_finite is False)):
            return bool(x == y)
        if x.has(sympy.zoo, sympy.nan) or y.has(sympy.zoo, sympy.nan):
            return False
    except (TypeError, AttributeError):
        return False
    return _difference_is_zero(x, y)


def _sym_equal(x, y) -> bool:
    """Exact-first symbolic equality of two sympy expressions (non-finite values never match)."""
    import sympy

    if not isinstance(x, sympy.Expr) or not isinstance(y, sympy.Expr):
        try:
            return bool(x == y)
        except Exception:  # noqa: BLE001
            return False
    bad = (sympy.zoo, sympy.nan)
    if x.has(*bad) or y.has(*bad):
        return False
    if x == y:
        return True
    if x.free_symbols != y.free_symbols:
        return False
    if not x.free_symbols:
        return _const_equal(x, y)
    try:
        if sympy.simplify(x - y) == 0:
            return True
    except GradeTimeout:
        raise
    except Exception:  # noqa: BLE001
        pass
    return _random_identity(x, y)


def _random_identity(x, y) -> bool:
    """x == y at 3 random positive rational points (polynomial identity testing); each point is
    compared like constants: exactly when both values are rational."""
    import random

    import sympy

    syms = sorted(x.free_symbols, key=str)
    rng = random.Random(12345)
    for _ in range(3):
        subs = {s: sympy.Rational(rng.randint(11, 97), rng.randint(3, 13)) for s in syms}
        try:
            vx, vy = x.subs(subs), y.subs(subs)
            if not (vx.is_number and vy.is_number) or vx.has(sympy.zoo, sympy.nan) or vy.has(sympy.zoo, sympy.nan):
                return False
            if not _const_equal(vx, vy):
                return False
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
            return False
    return True


def _scalar_equiv(g: str, p: str) -> bool:
    q = _quick_scalar(g, p)
    if q is not None:
        return q
    fast = fast_equiv(g, p)  # plain arithmetic, radicals, pi, polynomials: exact-first, no sympy
    if fast is not None:  # (it bounds exponents and sizes itself, so it also takes long literals)
        return fast
    if _too_big(g) or _too_big(p):
        return False
    x, y = _parse(g), _parse(p)
    if x is None or y is None:
        return False
    return _sym_equal(x, y)


def _relation_expr(parts: Sequence[str], ops: str):
    """a OP b -> (a - b, canonical op) with > and >= flipped to < and <=."""
    a, b = _parse(parts[0]), _parse(parts[1])
    if a is None or b is None:
        return None, None
    if ops in (">", "\\ge"):
        return b - a, {">": "<", "\\ge": "\\le"}[ops]
    return a - b, ops


def _relation_equiv(g: Node, p: Node) -> bool:
    import sympy

    if len(g.items) == 2 and len(p.items) == 2:
        if any(_too_big(s) for s in (*g.items, *p.items)):
            return False
        fast = fast_relation_equiv(tuple(g.items), g.text, tuple(p.items), p.text)
        if fast is not None:
            return fast
        eg, og = _relation_expr(g.items, g.text)
        ep, op = _relation_expr(p.items, p.text)
        if eg is None or ep is None or og != op:
            return False
        if sympy.simplify(eg - ep) == 0:
            return True
        if og in ("=", "\\ne"):
            if eg == 0 or ep == 0:
                return False
            ratio = sympy.simplify(eg / ep)
            return bool(ratio.is_number and ratio != 0)
        ratio = sympy.simplify(eg / ep)
        return bool(ratio.is_number and ratio.is_positive)
    if g.text != p.text or len(g.items) != len(p.items):
        return False
    return all(_scalar_equiv(a, b) for a, b in zip(g.items, p.items, strict=True))


def _match_unordered(gs: Sequence[Node], ps: Sequence[Node]) -> bool:
    if len(gs) != len(ps):
        return False
    used = [False] * len(ps)
    for g in gs:
        for j, p in enumerate(ps):
            if not used[j] and _node_equiv(g, p):
                used[j] = True
                break
        else:
            return False
    return True


def _node_equiv(g: Node, p: Node) -> bool:
    if g.kind == "scalar" and p.kind == "scalar":
        return _scalar_equiv(g.text, p.text)
    if g.kind == "set" and p.kind == "seq" and p.left == "(":
        return len(g.items) == len(p.items) and all(
            _node_equiv(a, b) for a, b in zip(g.items, p.items, strict=True))
    if {g.kind, p.kind} == {"set", "scalar"}:
        s, c = (g, p) if g.kind == "set" else (p, g)
        return len(s.items) == 1 and _node_equiv(s.items[0], c)
    if g.kind != p.kind:
        return False
    if g.kind == "seq":
        return (g.left, g.right) == (p.left, p.right) and len(g.items) == len(p.items) and all(
            _node_equiv(a, b) for a, b in zip(g.items, p.items, strict=True))
    if g.kind in ("set", "union"):
        return _match_unordered(g.items, p.items)
    if g.kind == "matrix":
        if len(g.items) != len(p.items) or any(len(a) != len(b) for a, b in zip(g.items, p.items, strict=True)):
            return False
        return all(_node_equiv(a, b) for ra, rb in zip(g.items, p.items, strict=True)
                   for a, b in zip(ra, rb, strict=True))
    if g.kind == "relation":
        return _relation_equiv(g, p)
    return False


def quick_equiv(pred: str | None, gold: str, benchmark: str) -> bool | None:
    """The sympy-free part of grading: a verdict, or None when symbolic work is needed."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    if pred is None or not str(pred).strip():
        return False
    if benchmark == "gsm8k" and _PLAIN_GOLD.fullmatch(gold):
        g = _gsm8k_number(gold)
        if g is not None and g.denominator == 1:
            return _gsm8k_equiv(pred, gold)
    g, p = normalize(gold), normalize(pred)
    if g == p:
        return bool(g)
    gn, pn = structure(g), structure(p)
    if gn.kind == "scalar" and pn.kind == "scalar":
        return _quick_scalar(gn.text, pn.text)
    return None


def equiv_unlimited(pred: str | None, gold: str, benchmark: str) -> bool:
    """The full decision without any time limit (runs inside grader processes)."""
    q = quick_equiv(pred, gold, benchmark)
    if q is not None:
        return q
    return _node_equiv(structure(normalize(gold)), structure(normalize(pred)))


def equiv_soft_limited(pred: str | None, gold: str, benchmark: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """`equiv_unlimited` under a SIGALRM limit (main thread only); a timeout means False."""
    try:
        with _soft_alarm(timeout):
            return equiv_unlimited(pred, gold, benchmark)
    except GradeTimeout:
        return False
    except RecursionError:
        return False


def is_equiv(pred: str | None, gold: str, benchmark: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Is the predicted answer equivalent to the gold one? benchmark: "gsm8k" | "math".

    Never takes much longer than `timeout` seconds: symbolic work runs in a grader process that
    is killed on overrun (inside a grader process, a SIGALRM limit is used instead).
    """
    q = quick_equiv(pred, gold, benchmark)
    if q is not None:
        return q
    if _IN_GRADER:
        return equiv_soft_limited(pred, gold, benchmark, timeout * 0.8)
    from skymath.evaluate.grade_pool import shared_pool

    return shared_pool().grade([(pred, gold, benchmark)], timeout=timeout)[0]


def grade_many(
    pairs: Iterable[tuple[str | None, str, str]],
    processes: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool = False,
    pool=None,
) -> list[bool]:
    """Verdicts for (pred, gold, benchmark) triples, in order, on `processes` cores (default all).

    Pairs the string rules decide are answered here; the rest go to grader processes (`pool`,
    a `GradePool` to reuse across calls, or a fresh one).
    """
    from skymath.evaluate.grade_pool import GradePool

    items = list(pairs)
    verdicts: list[bool | None] = [quick_equiv(p, g, b) for p, g, b in items]
    todo = [i for i, v in enumerate(verdicts) if v is None]
    if todo:
        if pool is not None:
            got = pool.grade([items[i] for i in todo], timeout=timeout, progress=progress)
        else:
            with GradePool(processes) as own:
                got = own.grade([items[i] for i in todo], timeout=timeout, progress=progress)
        for i, v in zip(todo, got, strict=True):
            verdicts[i] = v
    return [bool(v) for v in verdicts]
