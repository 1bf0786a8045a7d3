"""Word n-gram hashing without a Python object per word: numpy over the code points of a batch.

Definition: words are `re.findall(r"\\w+", text.lower())`. A batch of texts is lowered, joined
with "\\n" and viewed as a code-point array; a table marks the code points `\\w` matches, so word
boundaries are where that mask flips. Each word's value is a 32-bit polynomial hash of its characters
and its length (then xor-shift-multiply mixed to 64 bits); the hash of the n-gram starting at word i is
sum_j v[i+j] * P^j (mod 2^64), computed for all windows at once from one prefix sum:
h_i = (S[i+n] - S[i]) * P^-i, in wrapping uint64 arithmetic. Hash equality is only a candidate:
callers compare the actual words, so collisions never change a result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

WORD_RE = re.compile(r"\w+")
HASH_VERSION = "cp-poly32x64-v4"  # part of every cache key
_MASK = (1 << 64) - 1
_P = 0x9E3779B97F4A7C15  # word-sequence base (odd, so invertible mod 2^64)
_Q = 0xC2B2AE3D27D4EB4F  # character base (odd)


def words(text: str | None) -> list[str]:
    """The definition's word sequence of a text."""
    return WORD_RE.findall(text.lower()) if text else []


@cache
def word_char_table() -> np.ndarray:
    """bool[0x110000]: True where `\\w` matches the code point (derived from the regex itself)."""
    allchars = "".join(map(chr, range(0x110000)))
    marked = WORD_RE.sub(lambda m: "\0" * len(m.group()), allchars)
    cps = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = cps == 0
    table[0] = False  # "\0" itself is not a word character
    return table


class _Powers:
    """Growing tables of B^t and B^-t (mod 2^bits) for one base B."""

    def __init__(self, base: int, dtype: type = np.uint64) -> None:
        bits = np.dtype(dtype).itemsize * 8
        self.dtype = dtype
        self.base, self.inv = base % (1 << bits), pow(base, -1, 1 << bits)
        self.pw = np.ones(1, dtype=dtype)
        self.ipw = np.ones(1, dtype=dtype)

    def ensure(self, size: int) -> _Powers:
        if len(self.pw) < size:
            size = max(size, 2 * len(self.pw))
            one = np.ones(1, self.dtype)
            self.pw = np.concatenate([one, np.cumprod(np.full(size - 1, self.base, dtype=self.dtype))])
            self.ipw = np.concatenate([one, np.cumprod(np.full(size - 1, self.inv, dtype=self.dtype))])
        return self


_PW = _Powers(_P)
_Q32 = _Powers(_Q, np.uint32)


def finalize(x: np.ndarray) -> np.ndarray:
    """A cheap 64-bit mixer (xor-shift, multiply, xor-shift), so word values are not linear in the characters."""
    y = x >> np.uint64(29)
    np.bitwise_xor(x, y, out=y)
    np.multiply(y, np.uint64(0xBF58476D1CE4E5B9), out=y)
    z = y >> np.uint64(32)
    np.bitwise_xor(y, z, out=y)
    return y


@dataclass
class TokenBatch:
    """The words of several texts: spans into `lowered`, 64-bit values, first word of each text."""

    lowered: str  # the lowered texts joined with "\n"
    starts: np.ndarray  # int64 [W] char offset of each word in `lowered`
    ends: np.ndarray  # int64 [W]
    values: np.ndarray  # uint64 [W]
    text_words: np.ndarray  # int64 [T+1]: words of text k are text_words[k]:text_words[k+1]

    def words(self, lo: int, hi: int) -> list[str]:
        s = self.lowered
        return [s[a:b] for a, b in zip(self.starts[lo:hi].tolist(), self.ends[lo:hi].tolist(), strict=True)]

    def text_of(self, word_index: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.text_words, word_index, side="right") - 1


def tokenize(texts: Sequence[str | None]) -> TokenBatch:
    """Words of each text (the regex definition), vectorized over the whole batch."""
    lowered_list = [t.lower() if t else "" for t in texts]
    lowered = "\n".join(lowered_list)
    if lowered.isascii():
        cps = np.frombuffer(lowered.encode("ascii"), dtype=np.uint8)
    else:
        cps = np.frombuffer(lowered.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    isw = word_char_table()[cps]
    edges = np.flatnonzero(np.diff(isw, prepend=False, append=False))  # alternating starts / ends
    starts, ends = edges[0::2], edges[1::2]
    c = len(cps)
    _Q32.ensure(c + 1)
    s = np.empty(c + 1, dtype=np.uint32)  # 32-bit character hashes: half the memory traffic
    s[0] = 0
    np.multiply(cps, _Q32.pw[:c], out=s[1:], dtype=np.uint32, casting="unsafe")
    np.cumsum(s[1:], out=s[1:], dtype=np.uint32)
    wv = s[ends] - s[starts]
    wv *= _Q32.ipw[starts]
    values = finalize(wv.astype(np.uint64) | (ends - starts).astype(np.uint64) << np.uint64(32))
    lens = np.fromiter(map(len, lowered_list), dtype=np.int64, count=len(lowered_list))
    text_chars = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lens + 1, out=text_chars[1:])
    text_words = np.searchsorted(starts, text_chars)
    return TokenBatch(lowered, starts.astype(np.int64, copy=False), ends.astype(np.int64, copy=False), values,
                      text_words)


def prefix(values: np.ndarray) -> np.ndarray:
    """S[k] = sum_{t<k} v[t] * P^t (mod 2^64), length len(values)+1."""
    t = len(values)
    _PW.ensure(t + 1)
    s = np.empty(t + 1, dtype=np.uint64)
    s[0] = 0
    np.cumsum(values * _PW.pw[:t], out=s[1:])
    return s


def window_hashes(s: np.ndarray, n: int) -> np.ndarray:
    """From a prefix array: the hashes of all windows of n consecutive words (empty if too short)."""
    t = len(s) - 1
    if t < n:
        return np.empty(0, dtype=np.uint64)
    return (s[n:] - s[: t - n + 1]) * _PW.ipw[: t - n + 1]


def span_hashes(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """From a prefix array: the hash of each word span [lo, hi) (same function as window_hashes)."""
    return (s[hi] - s[lo]) * _PW.ipw[lo]
