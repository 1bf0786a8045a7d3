"""One compiled pass per batch (numba): UTF-8 bytes -> words -> word values -> rolling n-gram hashes
-> presence-table test, emitting only candidate windows (and each problem's whole-sequence hash).

The hashes are the SAME functions as skymath.decontam.ngram defines with numpy (word value =
sum_j cp_j Q^j mod 2^32 with its length, mixed to 64 bits; window hash = sum_j v_{i+j} P^j mod
2^64), so an index built by either path serves the other, and a hash hit is still verified
against the actual words. The numpy path stays as the fallback where numba is not installed.

Why: the numpy path makes ~10 passes over every character of a batch (code points, word-char
mask, edges, prefix sums, gathers); a single pass reads each byte once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skymath.decontam.ngram import _P, _Q, WORD_RE, word_char_table
from skymath.paths import cache_root

# numba caches the compiled kernel beside the source, which an installed package (a container
# image) may not allow: use skymath's per-machine cache unless the user chose a place
os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_root() / "numba"))

try:  # numba is a dependency; without it (an exotic platform) the numpy path is used
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

_M32 = np.uint64(0xFFFFFFFF)
_C = np.uint64(0xBF58476D1CE4E5B9)
_P64 = np.uint64(_P)
_PINV = np.uint64(pow(_P, -1, 1 << 64))
_Q64 = np.uint64(_Q & 0xFFFFFFFF)
_QINV64 = np.uint64(pow(_Q & 0xFFFFFFFF, -1, 1 << 32))


def _scan_py(buf, starts, ends, ascii_word, exact_flags, isw, n, present, table_shift, emit_all,
             hashes, win_b0, win_b1, cand, win_off, n_words, exact, collide):  # pragma: no cover
    """Per text of `buf[starts[t]:ends[t]]` (UTF-8): writes the hash of every n-word window into
    `hashes` (those of text t at win_off[t]:win_off[t+1]), each text's word count, the whole-
    sequence hash of the texts flagged in exact_flags, each window's byte span in `buf`
    (win_b0/win_b1: its first word's start, its last word's end, for verifying a hit without
    re-tokenizing the text) and (unless emit_all) into `cand` the indices of the windows whose
    hash is in the presence table; returns (windows, candidates).

    The output arrays are scratch space the caller reuses from batch to batch: fresh multi-MB
    arrays per call cost page faults that took longer than the scan itself. The table lookups
    (MBs: cache misses) run in a loop of their own, where many misses overlap."""
    u64 = np.uint64
    T = len(starts)
    ring = np.zeros(n, np.uint64)
    ring_b0 = np.zeros(n, np.int64)  # start byte of the last n words
    pn1 = u64(1)  # P^(n-1)
    for _ in range(n - 1):
        pn1 = pn1 * _P64
    nh = 0
    for t in range(T):
        win_off[t] = nh
        i = starts[t]
        end = ends[t]
        want_exact = exact_flags[t]
        w = 0  # words finished in this text
        slot = 0  # = w % n
        hwin = u64(0)  # hash of the window ending at the last word
        pw = u64(1)  # P^w while w < n
        e_hash = u64(0)
        e_pw = u64(1)
        in_word = False
        wh = u64(0)
        qp = u64(1)
        wlen = 0
        wb0 = 0
        while i < end:  # the text's last byte is a "\\n": every word ends inside the range
            ci = i  # where this character starts
            b = np.int64(buf[i])
            if b < 0x80:  # ASCII: one table lookup gives the lowered word character, or 0
                cp = np.int64(ascii_word[b])
                is_word = cp != 0
                i += 1
            else:  # non-ASCII texts were lowered by Python: decode, then the \\w table
                if b < 0xE0:
                    cp = ((b & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F)
                    i += 2
                elif b < 0xF0:
                    cp = ((b & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6) | (np.int64(buf[i + 2]) & 0x3F)
                    i += 3
                else:
                    cp = ((b & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12) \
                        | ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F)
                    i += 4
                is_word = isw[cp]
            if is_word:
                if not in_word:
                    in_word = True
                    wh = u64(0)
                    qp = u64(1)
                    wlen = 0
                    wb0 = ci
                wh = (wh + u64(cp) * qp) & _M32
                qp = (qp * _Q64) & _M32
                wlen += 1
                continue
            if not in_word:
                continue
            in_word = False
            # the word's 64-bit value: ngram.finalize(value | length << 32)
            x = wh | (u64(wlen) << u64(32))
            y = x ^ (x >> u64(29))
            y = y * _C
            v = y ^ (y >> u64(32))
            if collide:  # tests: every word hashes alike, so only the word comparison can decide
                v = u64(1)
            if want_exact:
                e_hash = e_hash + v * e_pw
                e_pw = e_pw * _P64
            if w < n:
                hwin = hwin + v * pw
                pw = pw * _P64
            else:
                hwin = (hwin - ring[slot]) * _PINV + v * pn1
            ring[slot] = v
            ring_b0[slot] = wb0
            slot += 1
            if slot == n:
                slot = 0
            w += 1
            if w >= n:
                hashes[nh] = hwin
                win_b0[nh] = ring_b0[slot]  # the oldest of the n words: where the window starts
                win_b1[nh] = ci
                nh += 1
        n_words[t] = w
        exact[t] = e_hash
    win_off[T] = nh
    nc = 0
    if not emit_all:
        for k in range(nh):
            b2 = hashes[k] >> table_shift
            if (u64(present[b2 >> u64(3)]) >> (b2 & u64(7))) & u64(1):
                cand[nc] = k
                nc += 1
    return nh, nc


_scan = numba.njit(cache=True, nogil=True)(_scan_py) if HAVE_NUMBA else None


def encode_batch(texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(buf, starts, ends, lowered_by_python): the texts' bytes in one buffer, text t at
    buf[starts[t]:ends[t]], each followed by a "\\n" inside its range (so a word always ends on a
    byte of its text: no end-of-text test per byte). ASCII texts are joined and encoded in one call each (the kernel lowers
    their A-Z itself); other texts are lowered by Python (`str.lower`, the definition, with its
    special cases), encoded as UTF-8 and placed after them."""
    strs = [t or "" for t in texts]
    n = len(strs)
    is_ascii = np.fromiter(map(str.isascii, strs), dtype=np.bool_, count=n)
    lens = np.fromiter(map(len, strs), dtype=np.int64, count=n) + 1  # + the newline
    starts = np.zeros(n, dtype=np.int64)
    if is_ascii.all():
        data = ("\n".join(strs) + "\n").encode("ascii")
        np.cumsum(lens[:-1], out=starts[1:])
    else:
        asc, other = np.flatnonzero(is_ascii), np.flatnonzero(~is_ascii)
        head = "".join([strs[i] + "\n" for i in asc.tolist()]).encode("ascii")
        parts = [(strs[i].lower() + "\n").encode("utf-8", "surrogatepass") for i in other.tolist()]
        lens[other] = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        starts[asc] = np.cumsum(lens[asc]) - lens[asc]
        starts[other] = len(head) + np.cumsum(lens[other]) - lens[other]
        data = head + b"".join(parts)
    return np.frombuffer(data, dtype=np.uint8), starts, starts + lens, ~is_ascii


_EMPTY_TABLE = np.zeros(1, dtype=np.uint8)
FORCE_COLLISIONS = False  # tests only: every word value 1 (all n-grams of equal length collide)


def ascii_word_table() -> np.ndarray:
    """uint8[128]: the lowered character for an ASCII word character, 0 for the others. Lowering
    A-Z is right for every text: those Python lowered itself have no A-Z left."""
    isw = word_char_table()
    return np.array([ord(chr(b).lower()) if isw[b] else 0 for b in range(128)], dtype=np.uint8)


_ASCII_WORD = ascii_word_table() if HAVE_NUMBA else None


class _Scratch:
    """Output arrays reused across batches (grown, never shrunk): page faults on fresh arrays
    of several MB per batch cost more than the scan on a VM."""

    def __init__(self) -> None:
        self.hashes = np.empty(0, np.uint64)
        self.b0 = np.empty(0, np.int64)
        self.b1 = np.empty(0, np.int64)
        self.cand = np.empty(0, np.int64)

    def ensure(self, size: int) -> None:
        if len(self.hashes) < size:
            size = max(size, int(len(self.hashes) * 1.5))
            self.hashes = np.empty(size, np.uint64)
            self.b0 = np.empty(size, np.int64)
            self.b1 = np.empty(size, np.int64)
            self.cand = np.empty(size, np.int64)


_SCRATCH = threading.local()


@dataclass
class ScanResult:
    """Windows of a batch: `text`, `pos` (first word), `hash`, and the byte span of each window in
    `buf` (what `window_words` reads); per text: `n_words`, `exact` (whole-sequence hash)."""

    text: np.ndarray
    pos: np.ndarray
    hash: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    n_words: np.ndarray
    exact: np.ndarray
    buf: np.ndarray
    lowered_by_python: np.ndarray  # per text: its bytes in buf are already lowered

    def window_words(self, k: int) -> list[str]:
        """The words of window k (the definition's words: `\\w+` of the lowered text)."""
        s = bytes(self.buf[int(self.b0[k]):int(self.b1[k])]).decode("utf-8", "surrogatepass")
        if not self.lowered_by_python[int(self.text[k])]:
            s = s.lower()  # ASCII: lowering the slice = slicing the lowered text
        return WORD_RE.findall(s)


def scan(texts: Sequence[str | None], n: int, present: np.ndarray | None, table_bits: int,
         exact_flags: np.ndarray | None = None) -> ScanResult:
    """Every window of the texts when `present` is None (building an index), else only those
    whose hash is in the presence table."""
    buf, starts, ends, lowered_by_python = encode_batch(texts)
    T = len(texts)
    if exact_flags is None:
        exact_flags = np.zeros(T, dtype=np.bool_)
    scratch = getattr(_SCRATCH, "s", None)
    if scratch is None:
        scratch = _SCRATCH.s = _Scratch()
    scratch.ensure((len(buf) + T) // 2 + T + 2)  # >= words >= windows
    win_off = np.empty(T + 1, np.int64)
    n_words = np.empty(T, np.int64)
    exact = np.empty(T, np.uint64)
    emit_all = present is None
    nh, nc = _scan(buf, starts, ends, _ASCII_WORD, exact_flags, word_char_table(), n,
                   _EMPTY_TABLE if emit_all else present, np.uint64(64 - table_bits), emit_all,
                   scratch.hashes, scratch.b0, scratch.b1, scratch.cand, win_off, n_words, exact,
                   FORCE_COLLISIONS)
    cand = np.arange(nh, dtype=np.int64) if emit_all else scratch.cand[:nc].copy()
    text = np.searchsorted(win_off, cand, side="right") - 1
    return ScanResult(text, cand - win_off[text], scratch.hashes[cand], scratch.b0[cand], scratch.b1[cand],
                      n_words, exact, buf, lowered_by_python)


def warm_up() -> float:
    """Compile (or load from numba's on-disk cache) the kernel; returns the seconds it took."""
    import time

    t = time.perf_counter()
    if HAVE_NUMBA:
        scan(["Warm up the kernel, once per process."], 2, None, 24)
        scan(["x"], 2, np.zeros(1 << 21, np.uint8), 24)
    return time.perf_counter() - t
