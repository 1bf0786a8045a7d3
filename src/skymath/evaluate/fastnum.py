"""A fast, exact-first evaluator for the LaTeX of typical answers, tried before sympy.

Most answers that the string rules cannot settle are plain arithmetic a model left unevaluated
(`3 \\cdot 4`, `2^{5}`, `\\binom{6}{2}`, `\\frac{49}{8}\\cdot 2`), radicals and pi written another
way (`\\frac{\\sqrt{3}}{3}`), or polynomials in one or two letters. Parsing those with
latex2sympy and simplifying with sympy costs 20-1000 ms a pair; evaluating them here costs well
under a millisecond. The verdict rules keep the grader's precision:

- Values are exact (Fraction) as long as the arithmetic is rational; two exact values are equal
  only when they are identical (2^{2005} and 2^{2005}+1 stay apart).
- Anything irrational (a square root that is not a perfect square, pi) is carried as a float of
  60 digits: values that differ beyond that rounding are different. Values that agree are
  evaluated again at 620 digits and are equal only if they still agree to 590 significant
  digits: the resolution of the sympy path (its differences are resolved to ~600 digits), so
  \\sqrt{2} is not a 40-digit decimal and \\sqrt{2}^{2005}+1 is not \\sqrt{2}^{2005}.
- Letters are variables: both sides are evaluated at random rational points (exactly, when the
  expressions are rational functions: polynomial identity testing, as the sympy path does).
- Whatever this grammar does not cover (functions, subscripts, `e`, `i`, intervals, text, ...)
  returns None and the caller falls back to sympy.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

DPS = 60  # first-pass precision (digits) of irrational values
DIFFERENT_REL = 1e-20  # first pass: values this far apart (relative) are different, whatever the rounding
CONFIRM_DPS = 620  # second pass for values that agree at DPS
EQUAL_REL = "1e-590"  # ... equal only if they still agree to this (relative) at CONFIRM_DPS
MAX_EXP = 4096  # largest integer exponent evaluated exactly
MAX_BITS = 20000  # largest exact integer (bits) kept
POINTS = 3  # random points for expressions with letters

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?|\.\d+)|(?P<cmd>\\[A-Za-z]+)|(?P<var>[A-Za-z])|(?P<op>[-+*/^()!{}\[\]]))"
)
_ALLOWED_CMDS = {"\\frac", "\\sqrt", "\\binom", "\\pi", "\\cdot", "\\times", "\\div"}
_FORBIDDEN_VARS = {"e", "i"}  # Euler's number / the imaginary unit, or a variable: ambiguous


class GiveUp(Exception):
    """This input is outside the fast grammar: let sympy decide."""


class Approx:
    """An irrational value carried as an mpmath float at DPS digits."""

    __slots__ = ("v",)

    def __init__(self, v) -> None:
        self.v = v


def _mp():
    """mpmath at the precision of the current pass (set by `_decide` with workdps)."""
    import mpmath

    return mpmath


def _approx(x):
    mp = _mp()
    return x.v if isinstance(x, Approx) else mp.mpf(x.numerator) / x.denominator


def _check_size(x: Fraction) -> Fraction:
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise GiveUp("too large")
    return x


def _add(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _check_size(a + b)
    return Approx(_approx(a) + _approx(b))


def _neg(a):
    return -a if isinstance(a, Fraction) else Approx(-a.v)


def _mul(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _check_size(a * b)
    return Approx(_approx(a) * _approx(b))


def _div(a, b):
    if isinstance(b, Fraction):
        if b == 0:
            raise GiveUp("division by zero")
        if isinstance(a, Fraction):
            return _check_size(a / b)
    bv = _approx(b)
    if bv == 0:
        raise GiveUp("division by zero")
    return Approx(_approx(a) / bv)


def _iroot(k: int, n: int) -> int | None:
    """The exact integer n-th root of k >= 0, or None (integer Newton iteration: no floats)."""
    if k < 2:
        return k
    if n == 2:
        import math

        r = math.isqrt(k)
        return r if r * r == k else None
    x = 1 << ((k.bit_length() + n - 1) // n)
    while True:
        y = ((n - 1) * x + k // x ** (n - 1)) // n
        if y >= x:
            break
        x = y
    return x if x**n == k else None


def _exact_root(x: Fraction, n: int) -> Fraction | None:
    """The exact n-th root of a non-negative rational, if it is rational."""
    num, den = _iroot(x.numerator, n), _iroot(x.denominator, n)
    return Fraction(num, den) if num is not None and den is not None else None


def _root(a, n: int):
    if isinstance(a, Fraction):
        if a < 0:
            if n % 2 == 0:
                raise GiveUp("even root of a negative number")
            r = _exact_root(-a, n)
            return -r if r is not None else Approx(-(_mp().root(_approx(-a), n)))
        r = _exact_root(a, n)
        if r is not None:
            return r
        return Approx(_mp().root(_approx(a), n))
    if a.v < 0:
        raise GiveUp("root of a negative value")
    return Approx(_mp().root(a.v, n))


def _pow(a, b):
    if isinstance(b, Fraction):
        if b.denominator == 1:
            e = b.numerator
            if isinstance(a, Fraction):
                if a == 0 and e < 0:
                    raise GiveUp("zero to a negative power")
                bits = max(a.numerator.bit_length(), a.denominator.bit_length())
                if abs(e) > MAX_EXP or bits * abs(e) > MAX_BITS:
                    raise GiveUp("exponent too large")
                return a**e
            if abs(e) > MAX_EXP:
                raise GiveUp("exponent too large")
            return Approx(a.v**e)
        if b.denominator <= 12:  # a rational power: a root, then an integer power
            return _pow(_root(a, b.denominator), Fraction(b.numerator))
    base = _approx(a)
    if base <= 0:
        raise GiveUp("irrational power of a non-positive base")
    return Approx(_mp().power(base, _approx(b)))


def _factorial(a):
    if not isinstance(a, Fraction) or a.denominator != 1 or not 0 <= a.numerator <= 300:
        raise GiveUp("factorial")
    import math

    return Fraction(math.factorial(a.numerator))


def _binom(a, b):
    if not all(isinstance(x, Fraction) and x.denominator == 1 and 0 <= x.numerator <= 2000 for x in (a, b)):
        raise GiveUp("binomial")
    import math

    return Fraction(math.comb(a.numerator, b.numerator))


class _Parser:
    """Recursive descent over the tokens of one normalized answer; builds a closure tree so an
    expression with variables is parsed once and evaluated at several points."""

    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise GiveUp(f"unexpected {text[pos:pos + 8]!r}")
            kind = m.lastgroup
            val = m.group(kind)
            if kind == "cmd" and val not in _ALLOWED_CMDS:
                raise GiveUp(val)
            if kind == "var" and val in _FORBIDDEN_VARS:
                raise GiveUp(val)
            if kind == "op" and val in "[]":
                raise GiveUp("bracket")
            self.toks.append((kind, val))
            pos = m.end()
        self.i = 0
        self.vars: set[str] = set()

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> tuple[str, str]:
        t = self.peek()
        if t is None or (want is not None and t[1] != want):
            raise GiveUp(f"expected {want}")
        self.i += 1
        return t

    def parse(self):
        node = self.expr()
        if self.peek() is not None:
            raise GiveUp(f"trailing {self.peek()}")
        return node

    def expr(self):
        t = self.peek()
        sign = None
        if t is not None and t[1] in "+-":
            self.take()
            sign = t[1]
        node = self.term()
        if sign == "-":
            inner = node
            node = lambda env, f=inner: _neg(f(env))  # noqa: E731
        while (t := self.peek()) is not None and t[1] in "+-":
            self.take()
            rhs = self.term()
            if t[1] == "+":
                node = lambda env, a=node, b=rhs: _add(a(env), b(env))  # noqa: E731
            else:
                node = lambda env, a=node, b=rhs: _add(a(env), _neg(b(env)))  # noqa: E731
        return node

    def _starts_factor(self, t: tuple[str, str] | None) -> bool:
        if t is None:
            return False
        kind, val = t
        return kind in ("num", "var") or val in ("(", "{") or val in ("\\frac", "\\sqrt", "\\binom", "\\pi")

    def term(self):
        node = self.power()
        after_div = False
        while True:
            t = self.peek()
            if t is not None and t[1] in ("*", "\\cdot", "\\times"):
                self.take()
                rhs = self.power()
                node = lambda env, a=node, b=rhs: _mul(a(env), b(env))  # noqa: E731
                after_div = False
            elif t is not None and t[1] in ("/", "\\div"):
                self.take()
                rhs = self.power()
                node = lambda env, a=node, b=rhs: _div(a(env), b(env))  # noqa: E731
                after_div = True
            elif self._starts_factor(t):  # implicit multiplication: 2x, 2\sqrt{3}, (a)(b)
                if after_div:
                    raise GiveUp("a/bc is ambiguous")
                if t[0] == "num" and self.toks[self.i - 1][0] == "num":
                    raise GiveUp("two numbers in a row")
                if t[1] == "\\frac" and self.toks[self.i - 1][0] == "num":
                    raise GiveUp("3\\frac12 may be a mixed number")
                rhs = self.power()
                node = lambda env, a=node, b=rhs: _mul(a(env), b(env))  # noqa: E731
            else:
                return node

    def power(self):
        base = self.postfix()
        if (t := self.peek()) is not None and t[1] == "^":
            self.take()
            t = self.peek()
            if t is not None and t[1] == "{":
                exp = self.group()
            elif t is not None and t[0] == "num":
                self.take()
                digits = t[1]
                if len(digits) > 1 and "." not in digits:  # x^23 means x^2 3 in LaTeX
                    raise GiveUp("multi-digit bare exponent")
                exp = self._const(Fraction(digits))
            elif t is not None and t[0] == "var":
                exp = self.atom()
            else:
                raise GiveUp("exponent")
            b = base
            return lambda env, a=b, e=exp: _pow(a(env), e(env))
        return base

    def postfix(self):
        node = self.atom()
        while (t := self.peek()) is not None and t[1] == "!":
            self.take()
            node = lambda env, a=node: _factorial(a(env))  # noqa: E731
        return node

    @staticmethod
    def _const(v):
        return lambda env: v

    def group(self):
        self.take("{")
        node = self.expr()
        self.take("}")
        return node

    def atom(self):
        t = self.take()
        kind, val = t
        if kind == "num":
            return self._const(_check_size(Fraction(val)))
        if kind == "var":
            self.vars.add(val)
            return lambda env, name=val: env[name]
        if val == "(":
            node = self.expr()
            self.take(")")
            return node
        if val == "{":
            self.i -= 1
            return self.group()
        if val == "\\pi":
            return lambda env: Approx(_mp().pi)
        if val == "\\frac":
            num, den = self._arg(), self._arg()
            return lambda env, a=num, b=den: _div(a(env), b(env))
        if val == "\\binom":
            n, k = self._arg(), self._arg()
            return lambda env, a=n, b=k: _binom(a(env), b(env))
        if val == "\\sqrt":
            if (t := self.peek()) is not None and t[1] == "[":
                raise GiveUp("n-th root")
            arg = self._arg()
            return lambda env, a=arg: _root(a(env), 2)
        raise GiveUp(f"unexpected {val}")

    def _arg(self):
        """A braced argument, or one digit / letter (`\\frac12`, `\\sqrt2`)."""
        t = self.peek()
        if t is not None and t[1] == "{":
            return self.group()
        if t is not None and t[0] == "num" and len(t[1]) == 1:
            self.take()
            return self._const(Fraction(t[1]))
        if t is not None and t[0] == "var":
            return self.atom()
        raise GiveUp("argument")


def compile_answer(text: str):
    """(evaluate(env) -> value, variable names) for a normalized scalar answer; GiveUp if unsupported."""
    p = _Parser(text)
    return p.parse(), frozenset(p.vars)


def _decide(fg, fp, env: dict) -> bool:
    """Exact values: identical or not. Otherwise two passes: 60 digits to reject, 620 to accept."""
    import mpmath

    with mpmath.workdps(DPS):
        x, y = fg(env), fp(env)
        if isinstance(x, Fraction) and isinstance(y, Fraction):
            return x == y
        ax, ay = _approx(x), _approx(y)
        if abs(ax - ay) > DIFFERENT_REL * max(mpmath.mpf(1), abs(ax), abs(ay)):
            return False
    with mpmath.workdps(CONFIRM_DPS):
        ax, ay = _approx(fg(env)), _approx(fp(env))
        return bool(abs(ax - ay) <= mpmath.mpf(EQUAL_REL) * max(mpmath.mpf(1), abs(ax), abs(ay)))


def fast_equiv(gold: str, pred: str) -> bool | None:
    """True / False when this evaluator can decide with the grader's precision, else None."""
    try:
        fg, vg = compile_answer(gold)
        fp, vp = compile_answer(pred)
    except (GiveUp, ValueError, ZeroDivisionError, RecursionError):
        return None
    if vg != vp:
        return None  # sympy decides (usually "different variables: not equal")
    if not vg:
        try:
            return _decide(fg, fp, {})
        except (GiveUp, ZeroDivisionError, ValueError, OverflowError):
            return None
    rng = random.Random(20240708)
    decided = 0
    for _ in range(POINTS * 3):
        env = {v: Fraction(rng.randint(2, 10**6), rng.randint(2, 10**4)) for v in sorted(vg)}
        try:
            verdict = _decide(fg, fp, env)
        except (GiveUp, ZeroDivisionError, ValueError, OverflowError):
            continue  # a pole or a domain edge: another point
        if verdict is False:
            return False
        decided += 1
        if decided >= POINTS:
            return True
    return None


_FLIP = {">": "<", "\\ge": "\\le"}


def fast_relation_equiv(gold: tuple[str, str], gold_op: str, pred: tuple[str, str], pred_op: str) -> bool | None:
    """Two relations `a OP b` (>, >= flipped to <, <=) are the same when (a - b) of one is a
    constant multiple of the other's: nonzero for = and !=, positive for < and <=. Decided at
    random rational points with exact arithmetic; None when that is not possible here."""
    def side(sides: tuple[str, str], op: str):
        a, b = sides
        if op in _FLIP:
            a, b, op = b, a, _FLIP[op]
        f, names = compile_answer(f"({a})-({b})")
        return f, names, op

    try:
        fg, vg, og = side(gold, gold_op)
        fp, vp, op = side(pred, pred_op)
    except (GiveUp, ValueError, ZeroDivisionError, RecursionError):
        return None
    if og != op:
        return False
    if vg != vp or not vg:
        return None
    rng = random.Random(20240709)
    ratio = None
    decided = 0
    for _ in range(POINTS * 4):
        env = {v: Fraction(rng.randint(2, 10**6), rng.randint(2, 10**4)) for v in sorted(vg)}
        try:
            gv, pv = fg(env), fp(env)
        except (GiveUp, ZeroDivisionError, ValueError, OverflowError):
            continue
        if not (isinstance(gv, Fraction) and isinstance(pv, Fraction)):
            return None
        if gv == 0 and pv == 0:
            continue
        if gv == 0 or pv == 0:
            return False
        r = gv / pv
        if ratio is None:
            ratio = r
            if og in ("<", "\\le") and r < 0:
                return False
        elif r != ratio:
            return False
        decided += 1
        if decided >= POINTS + 1:
            return True
    return None
