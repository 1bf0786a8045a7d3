"""Final-answer extraction from a model response.

strict  = the paper's MetaMath protocol: the text after the LAST "The answer is" (nothing else),
          so precision is near 100% and unexpected formats count as wrong.
lenient = strict first, then the last \\boxed{}, "the correct/final answer is", a trailing
          "x = ..." and finally the last number in the text. Both are scored and reported.
"""

from __future__ import annotations

import re

ANSWER_PREFIX = "The answer is"

_BOX_CMDS = ("\\boxed", "\\fbox")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_PHRASE_RE = re.compile(
    r"(?:the\s+)?(?:correct|final)\s+answer\s*(?:is|:)\s*|answer\s*:\s*", re.IGNORECASE
)
_ASSIGN_RE = re.compile(r"(?:^|[\s$(])[A-Za-z](?:_\w+)?\s*=\s*([^=\n]+?)\s*\$?\s*\.?\s*$")


def _match_brace(text: str, open_idx: int) -> int | None:
    """Index of the `}` closing the `{` at open_idx (nesting aware, `\\{` `\\}` skipped)."""
    depth = 0
    i = open_idx
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5`: (start, end, content), in order."""
    out: list[tuple[int, int, str]] = []
    for m in re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text):
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            close = _match_brace(text, j)
            if close is None:
                continue
            out.append((m.start(), close + 1, text[j + 1 : close]))
        elif j > m.end():  # `\boxed 5`: up to the next space / `$`
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                out.append((m.start(), j + tok.end(), tok.group(0)))
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{}` (or `\\fbox{}`) in text, braces matched; None if absent."""
    if not text:
        return None
    spans = boxed_spans(text)
    return spans[-1][2].strip() if spans else None


def strip_boxed(text: str) -> str:
    """`\\boxed{X}` -> X everywhere (answers are often written boxed after the prefix)."""
    spans = boxed_spans(text)
    for start, end, content in reversed(spans):
        text = text[:start] + content + text[end:]
    return text


def _clean(ans: str) -> str | None:
    """Trim the tail of an extracted answer: first line, math delimiters, trailing period/colon.

    Only a line that is ONE math span (`$5$.`) is unwrapped; otherwise every delimiter goes and
    the whole line stays, so a hedge like `$5$ or $6$` remains "5 or 6" (never credited as 5).
    """
    ans = ans.strip()
    ans = ans.split("\n", 1)[0].strip()
    ans = ans.lstrip(":").strip()
    body = ans.rstrip(" .")
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        inner = body[len(left) : len(body) - len(right)]
        if (len(body) > len(left) + len(right) and body.startswith(left) and body.endswith(right)
                and left not in inner and right not in inner):
            ans = inner
            break
    else:
        ans = re.sub(r"(?<!\\)\$", "", ans).replace("\\(", "").replace("\\)", "")
    ans = ans.strip()
    if ans.endswith("."):
        ans = ans[:-1].rstrip()
    ans = ans.strip("$ ").strip()
    if ans.endswith("."):
        ans = ans[:-1].rstrip()
    return ans or None


def _strict(text: str) -> str | None:
    idx = text.rfind(ANSWER_PREFIX)
    if idx < 0:
        return None
    return _clean(text[idx + len(ANSWER_PREFIX) :])


def _last_number(text: str) -> str | None:
    nums = _NUMBER_RE.findall(text)
    return nums[-1].rstrip(",") if nums else None


def extract_answer(text: str | None, mode: str = "strict") -> str | None:
    """The final answer of a response, or None. mode: "strict" | "lenient" (see module doc)."""
    if mode not in ("strict", "lenient"):
        raise ValueError(f"extraction mode must be 'strict' or 'lenient', got {mode!r}")
    if not text:
        return None
    ans = _strict(text)
    if ans is not None or mode == "strict":
        return ans
    boxed = last_boxed(text)
    if boxed:
        return boxed
    phrases = list(_PHRASE_RE.finditer(text))
    if phrases:
        got = _clean(text[phrases[-1].end() :])
        if got:
            return got
    tail = text.rstrip().rsplit("\n", 1)[-1]
    m = _ASSIGN_RE.search(tail)
    if m:
        rhs = m.group(1).split("=")[-1]
        got = _clean(rhs)
        if got:
            return got
    return _last_number(text)
