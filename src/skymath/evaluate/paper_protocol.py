"""The paper's answer checking, reproduced exactly: MetaMath's evaluation (Yu et al. 2024), which
Skywork-Math says it adopts ("the same evaluation framework as in MetaMath", strict, near-100%
precision, low recall). A number computed here is comparable to the paper's tables; the default
symbolic grader (`skymath.evaluate.grade`) is a different, more forgiving protocol.

What MetaMath's `eval_gsm8k.py` / `eval_math.py` + `util.py` do, reimplemented (not copied):

1. Generation stops at the first of the stop strings `Question`, `USER`, `ASSISTANT`,
   `Instruction`, `Response` (with or without a colon). Greedy decoding makes cutting a finished
   response at the first occurrence the same text as stopping there.
2. The answer is the text after the LAST answer prefix. MetaMath's training data ends with
   "The answer is: X" and it splits on that; Skywork's ends with "\\nThe answer is X", so both
   spellings are accepted (the prefix with its trailing space). No prefix: wrong ("invalid").
3. GSM8K: the FIRST match of `[-+]?\\d*[.,/]?\\d+` in that text (stripped), `a/b` as a fraction,
   a comma removed, rounded to an integer (Python's round: half to even), compared as floats
   with the integer gold. So "17.6" counts as 18 and "5 or 6" counts as 5: that is the protocol.
4. MATH: the text up to the first ".\\n", stripped, one trailing "." dropped, then MetaMath's
   `is_equiv`: both sides through the hendrycks `strip_string` normalization and compared as
   STRINGS (no algebra: 1/2+sqrt2/4 is not (2+sqrt2)/4, and "$5$" is not "5"). A normalization
   step that raises falls back to comparing the raw strings, as MetaMath's `except` does.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

NAME = "paper"
DESCRIPTION = ("the paper's protocol (MetaMath's evaluation: text after the last \"The answer is\", "
               "GSM8K first number rounded, MATH string match after hendrycks normalization)")

STOP_STRINGS = ("Question", "USER", "ASSISTANT", "Instruction", "Response")  # also cover "X:" forms
_PREFIX = re.compile(r"The answer is:? ")
_GSM_NUMBER = re.compile(r"[\-+]?\d*[\.,/]?\d+")


def cut_at_stop(text: str) -> str:
    """The response as vLLM with MetaMath's stop strings would have returned it."""
    cut = min((i for i in (text.find(s) for s in STOP_STRINGS) if i >= 0), default=-1)
    return text[:cut] if cut >= 0 else text


def _after_last_prefix(text: str) -> str | None:
    parts = _PREFIX.split(cut_at_stop(text or ""))
    return parts[-1] if len(parts) > 1 else None


# ---- GSM8K ---------------------------------------------------------------------------------------

def _numeric(s: str) -> bool:
    """MetaMath's is_number: float() parses it, or it is a single unicode numeric character."""
    try:
        float(s)
        return True
    except ValueError:
        pass
    try:
        unicodedata.numeric(s)
        return True
    except (TypeError, ValueError):
        return False


def gsm8k_prediction(text: str) -> int | None:
    """The integer MetaMath reads from a GSM8K response, or None (an invalid output)."""
    rest = _after_last_prefix(text)
    if rest is None:
        return None
    m = _GSM_NUMBER.search(rest.strip())
    if m is None:
        return None
    tok = m.group()
    if "/" in tok:
        num, den = tok.split("/")[0], tok.split("/")[1]
        if not (_numeric(num) and _numeric(den)):
            return None
        if den == "0":
            return round(float(num.replace(",", "")))
        try:
            frac = Fraction(tok.replace(",", ""))
        except ZeroDivisionError:  # "5/00": MetaMath's script crashes here; an invalid output
            return None
        return round(float(frac.numerator / frac.denominator))
    value = float(tok.replace(",", ""))
    if value == float("inf"):
        return None
    return round(value)


# ---- MATH ------------------------------------------------------------------------------------------

def math_prediction(text: str) -> str | None:
    """The answer string MetaMath compares for a MATH response, or None (no prefix: invalid)."""
    rest = _after_last_prefix(text)
    if rest is None:
        return None
    ans = rest.split(".\n")[0].strip()
    if ans.endswith("."):
        ans = ans[:-1]
    return ans.strip()


def _units_off(s: str) -> str:
    """`X\\text{ units}` -> X; more than one "\\text{ " raises (MetaMath asserts exactly one)."""
    if "\\text{ " not in s:
        return s
    head, *rest = s.split("\\text{ ")
    if len(rest) != 1:
        raise ValueError("more than one '\\text{ ' block")
    return head


def _braced_sqrt(s: str) -> str:
    """`\\sqrt3` -> `\\sqrt{3}` (one character); an empty tail after `\\sqrt` raises."""
    if "\\sqrt" not in s:
        return s
    first, *tails = s.split("\\sqrt")
    out = [first]
    for tail in tails:
        out.append("\\sqrt" + (tail if tail[0] == "{" else "{" + tail[0] + "}" + tail[1:]))
    return "".join(out)


def _braced_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}` -> `\\frac{1}{72}`; a 1-char tail leaves s as is."""
    first, *tails = s.split("\\frac")
    out = [first]
    for tail in tails:
        if tail[0] == "{":  # an empty tail raises here, as in MetaMath
            out.append("\\frac" + tail)
            continue
        if len(tail) < 2:
            return s
        a, b, more = tail[0], tail[1], tail[2:]
        out.append("\\frac{" + a + "}" + (b + more if b == "{" else "{" + b + "}" + more))
    return "".join(out)


def _slash_to_frac(s: str) -> str:
    """`3/4` -> `\\frac{3}{4}` when both sides are canonical integers (int() errors propagate)."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = int(parts[0]), int(parts[1])
    return "\\frac{" + str(a) + "}{" + str(b) + "}" if s == f"{a}/{b}" else s


def metamath_normalize(s: str) -> str:
    """hendrycks' strip_string, step by step in MetaMath's order (may raise: see `math_equiv`)."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        s = s.replace(old, new)
    s = _units_off(s)
    s = s.replace("\\%", "")  # a bare % stays (MetaMath removes only the escaped one)
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> " 5" (a short left side only)
        s = sides[1]
    s = _braced_sqrt(s)
    s = s.replace(" ", "")
    s = _braced_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def math_equiv(pred: str | None, gold: str | None) -> bool:
    """MetaMath's util.is_equiv: normalized strings equal; on a normalization error, raw equality."""
    if pred is None and gold is None:
        return True
    if pred is None or gold is None:
        return False
    try:
        return metamath_normalize(pred) == metamath_normalize(gold)
    except Exception:  # noqa: BLE001 - MetaMath catches everything here and compares raw strings
        return pred == gold


# ---- both ------------------------------------------------------------------------------------------

def paper_prediction(text: str, kind: str) -> str | None:
    """What the protocol reads from a response, as a string for the results file."""
    if kind == "gsm8k":
        v = gsm8k_prediction(text)
        return None if v is None else str(v)
    return math_prediction(text)


def paper_correct(text: str, gold: str, kind: str) -> bool:
    """Is the response correct under the paper's protocol? kind: "gsm8k" | "math"."""
    if kind == "gsm8k":
        v = gsm8k_prediction(text)
        if v is None:
            return False
        try:
            return float(v) == float(gold)
        except (ValueError, OverflowError):
            return False
    return math_equiv(math_prediction(text), gold)
