"""Answer normalization and structure parsing for MATH-style answers (pure string work, fast).

`normalize` maps the many ways of writing one answer onto one string (\\dfrac, \\left, spaces,
\\text{} units, ^\\circ, \\$, %, thousands separators, `x =` labels ...); `structure` splits a
normalized answer into what is compared: a scalar, an ordered tuple/interval, an unordered set
or solution list, a union of intervals, a matrix, or a relation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from skymath.evaluate.extract import strip_boxed

_TEXT_CMD = r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname)"
_UNIT_WORDS = re.compile(r"^[A-Za-z][A-Za-z.]*(?:\s+[A-Za-z][A-Za-z.]*)*(?:\^\{?\d\}?)?$")
_PLAIN_NUM = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)$")
_SIMPLE_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?\d+)/(\d+)$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_LABEL = re.compile(
    r"^(?:[A-Za-z](?:_\{?\w+\}?)?'*|\\[A-Za-z]+|\|[A-Za-z]+\||[A-Za-z]\([A-Za-z0-9]\)|"
    r"\((?:[A-Za-z](?:_\{?\w+\}?)?,)+[A-Za-z](?:_\{?\w+\}?)?\))$"
)
_REL_OPS = ("\\le", "\\ge", "\\ne", "<", ">")


def _unwrap_cmd_args(s: str, cmd_re: str, keep: bool) -> str:
    """Replace `\\cmd{X}` by X (keep) or drop it, matching braces."""
    out = []
    i = 0
    for m in re.finditer(cmd_re + r"\s*\{", s):
        if m.start() < i:
            continue
        depth, j = 0, m.end() - 1
        while j < len(s):
            if s[j] == "{":
                depth += 1
            elif s[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        out.append(s[i : m.start()])
        if keep:
            out.append(s[m.end() : j])
        i = j + 1
    out.append(s[i:])
    return "".join(out)


def _fix_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}` -> `\\frac{1}{72}` (hendrycks' fix_fracs)."""
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*([A-Za-z])\s*([A-Za-z\d])", r"\\frac{\1}{\2}", s)
    return s


def _fix_sqrt(s: str) -> str:
    return re.sub(r"\\sqrt\s*([0-9A-Za-z])", r"\\sqrt{\1}", s)


def _text_blocks(s: str) -> str:
    """`\\text{}`-like blocks: unwrap a letter/choice/word answer, drop trailing unit words."""
    s = re.sub(_TEXT_CMD + r"\s*\{\s*(?:and|or)\s*\}", ",", s)
    blocks = list(re.finditer(_TEXT_CMD + r"\s*\{([^{}]*)\}(\^\{?\d\}?)?", s))
    if not blocks:
        return s
    rest = re.sub(_TEXT_CMD + r"\s*\{[^{}]*\}(\^\{?\d\}?)?", "", s).strip(" ,.")
    out = s
    for m in reversed(blocks):
        body = m.group(1).strip()
        unit = bool(rest) and bool(_UNIT_WORDS.match(body)) and len(re.sub(r"[^A-Za-z]", "", body)) >= 2
        out = out[: m.start()] + ("" if unit else body + (m.group(2) or "")) + out[m.end() :]
    return out


def _strip_thousands(s: str) -> str:
    s = re.sub(r"(\d)\{,\}(\d)", r"\1\2", s)
    s = re.sub(r"(\d),\\!\s*(\d)", r"\1\2", s)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s


def _strip_label(s: str) -> str:
    """`x = 5` -> `5`, `(p,q)=(3,2)` -> `(3,2)`, `x \\in [0,1)` -> `[0,1)`; equations stay."""
    m = re.match(r"^\s*[A-Za-z]\s*\\in\s*", s)
    if m:
        return s[m.end() :]
    if s.count("=") == 1 and not any(op in s for op in ("\\le", "\\ge", "<", ">", "\\ne")):
        lhs, rhs = s.split("=")
        if _LABEL.match(lhs.strip().replace(" ", "")) and rhs.strip():
            return rhs.strip()
    return s


def normalize(ans: str | None) -> str:
    """Canonical string form of a MATH answer (the cheap first comparison, and parser input)."""
    if ans is None:
        return ""
    s = str(ans).strip()
    s = strip_boxed(s)
    s = s.replace("\n", " ").replace("\\$", "").replace("\\\\", "\x01")
    s = re.sub(r"\\approx.*$", "", s)
    s = s.replace("$", "").replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    s = s.replace("\\displaystyle", "").replace("\\mathbb{R}", "\\R")
    s = re.sub(r"\\(?:dfrac|tfrac|cfrac)", r"\\frac", s)
    s = re.sub(r"\\left\s*(?=[(\[{|.\\])|\\right\s*(?=[)\]}|.\\])", "", s)
    s = s.replace("\\left.", "").replace("\\right.", "").replace("\\bigl", "").replace("\\bigr", "")
    s = re.sub(r"\\[,;:! ]|~", lambda m: "\\!" if m.group(0) == "\\!" else " ", s)
    s = _strip_thousands(s)
    s = s.replace("\\!", "")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree", "", s)
    s = re.sub(r"\\%|%|\s*\bpercent\b", "", s)
    s = s.replace("\\lt", "<").replace("\\gt", ">")
    s = re.sub(r"<=|\\leqslant|\\leq(?![A-Za-z])", r"\\le ", s)
    s = re.sub(r">=|\\geqslant|\\geq(?![A-Za-z])", r"\\ge ", s)
    s = re.sub(r"\\neq(?![A-Za-z])|!=", r"\\ne ", s)
    s = _text_blocks(s)
    s = re.sub(r",\s*(?:and|or)\s+", ",", s)
    s = re.sub(r"\s+(?:and|or)\s+", ",", s)
    s = _fix_sqrt(_fix_fracs(s))
    s = _strip_label(s.strip())
    # trailing unit words after a number: `125 miles`, `10 sq units`
    m = re.match(r"^(-?[\d.,/]+)\s+([A-Za-z][A-Za-z. ]*)$", s)
    if m and len(re.sub(r"[^A-Za-z]", "", m.group(2))) >= 2:
        s = m.group(1)
    # whitespace: drop all, except a separator after a command name before a letter (\pi r)
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x00", s)
    s = re.sub(r"\s+", "", s).replace("\x00", " ")
    s = re.sub(r"(?<![\d])\.(\d)", r"0.\1", s)
    s = re.sub(r",{2,}", ",", s).strip(",")
    s = s.rstrip(".")
    s = _strip_thousands(s)
    while len(s) > 2 and s[0] == "(" and s[-1] == ")" and _enclosed(s) and len(split_top(s[1:-1])) == 1:
        s = s[1:-1]
    s = s.replace("\x01", "\\\\")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def as_fraction(s: str) -> Fraction | None:
    """A plain number (`-3`, `0.25`, `7/2`, `\\frac{7}{2}`) as an exact Fraction, else None."""
    if _PLAIN_NUM.match(s):
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
    m = _SIMPLE_FRAC.match(s)
    if m:
        if m.group(2) is not None:
            sign = -1 if m.group(1) else 1
            num, den = int(m.group(2)), int(m.group(3))
        else:
            sign, num, den = 1, int(m.group(4)), int(m.group(5))
        if den == 0:
            return None
        return sign * Fraction(num, den)
    m = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", s)  # mixed number 918\frac{1}{2}
    if m and int(m.group(4)) != 0 and int(m.group(3)) < int(m.group(4)):
        v = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -v if m.group(1) else v
    return None


# ---- structure ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """kind: scalar | seq (ordered, with brackets) | set (unordered) | union | matrix | relation."""

    kind: str
    items: tuple = ()
    text: str = ""
    left: str = ""
    right: str = ""


def split_top(s: str, sep: str = ",") -> list[str]:
    """Split on `sep` at bracket depth 0 (`(`, `[`, `{`, and `\\{` count as brackets)."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(s):
        c = s[i]
        if s.startswith(sep, i) and depth == 0:
            parts.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _enclosed(s: str) -> bool:
    """True if the first char's bracket closes at the last char (`(1,2)` yes, `(1)(2)` no)."""
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return depth == 0


def _matrix(s: str) -> Node | None:
    m = re.fullmatch(r"[\[(]?\\begin\{([pbvBV]?matrix|array)\}(\{[^{}]*\})?(.*?)\\end\{\1\}[\])]?", s)
    if not m:
        return None
    rows = [r for r in m.group(3).split("\\\\") if r.strip()]
    cells = tuple(tuple(structure(c) for c in r.split("&")) for r in rows)
    return Node("matrix", cells)


def _relation(s: str) -> Node | None:
    ops = re.findall(r"\\le|\\ge|\\ne|<|>|=", s)
    if not ops:
        return None
    parts = [p.strip() for p in re.split(r"\\le|\\ge|\\ne|<|>|=", s)]
    if any(not p for p in parts):
        return None
    # chain a < x < b (or a \le x \le b) on one symbol -> an interval
    if len(ops) == 2 and ops[0] == ops[1] or (len(ops) == 2 and {ops[0], ops[1]} <= {"<", "\\le"}):
        if all(o in ("<", "\\le") for o in ops) and re.fullmatch(r"[A-Za-z]", parts[1]):
            left = "(" if ops[0] == "<" else "["
            right = ")" if ops[1] == "<" else "]"
            return Node("seq", (structure(parts[0]), structure(parts[2])), left=left, right=right)
        if all(o in (">", "\\ge") for o in ops) and re.fullmatch(r"[A-Za-z]", parts[1]):
            left = "(" if ops[1] == ">" else "["
            right = ")" if ops[0] == ">" else "]"
            return Node("seq", (structure(parts[2]), structure(parts[0])), left=left, right=right)
    return Node("relation", tuple(parts), text="|".join(ops))


def structure(s: str) -> Node:
    """Parse a normalized answer into a Node tree (strings stay strings at the leaves)."""
    s = s.strip()
    mat = _matrix(s)
    if mat is not None:
        return mat
    if "\\cup" in s:
        parts = [p for p in split_top(s, "\\cup") if p]
        if len(parts) > 1:
            return Node("union", tuple(structure(p) for p in parts))
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        return Node("set", tuple(structure(p) for p in split_top(inner) if p))
    items = split_top(s)
    if len(items) > 1 and all(items):
        return Node("set", tuple(structure(p) for p in items))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _enclosed(s):
        inner = split_top(s[1:-1])
        if len(inner) > 1 and all(inner):
            return Node("seq", tuple(structure(p) for p in inner), left=s[0], right=s[-1])
    m = re.fullmatch(r"(.*?)\\pm(.+)", s)
    if m and "\\pm" not in m.group(2):
        a, b = m.group(1), m.group(2)
        plus = f"{a}+{b}" if a else b
        minus = f"{a}-{b}" if a else f"-{b}"
        return Node("set", (Node("scalar", text=plus), Node("scalar", text=minus)))
    rel = _relation(s)
    if rel is not None:
        return rel
    return Node("scalar", text=s)
