"""The fast n-gram filter: sorted benchmark n-gram hashes behind a 2^24-bit presence table, one
compiled pass per batch over the text bytes (decontam/fastscan.py; numpy when numba is missing),
and an exact word comparison for every hash hit, so the result is exactly the plain definition
whether hashes collide or not."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from skymath.decontam.benchmarks import (
    BenchItem,
    BenchmarkSpec,
    load_benchmark,
    resolve_benchmark,
    source_key,
)
from skymath.decontam.ngram import HASH_VERSION, prefix, span_hashes, tokenize, window_hashes, words

if TYPE_CHECKING:
    from skymath.decontam import fastscan


@lru_cache(maxsize=1)
def _fastscan():
    """The compiled scanner, imported on first use: numba + llvmlite cost ~0.7 s, which every
    worker of every stage would pay at start-up if this module imported it at load time."""
    from skymath.decontam import fastscan

    return fastscan

FIELDS = ("problem", "response")
_TABLE_BITS = 24


@dataclass(frozen=True)
class Match:
    """Why a sample was removed: which benchmark item, which rule, which of its texts, which words."""

    benchmark: str
    test_id: str
    rule: Literal["ngram", "exact_problem"]
    field: str  # the sample's field that matched
    test_field: str  # "problem" or "solution" of the test item
    ngram: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NgramIndex:
    """Every word n-gram of the benchmark problems and solutions (sorted hashes + text, position)
    and the word-sequence hash of every test problem (for the exact-problem rule)."""

    def __init__(self, items: Sequence[BenchItem], n: int, cache_path: Path | None = None) -> None:
        self.items = list(items)
        self.n = n
        if cache_path is not None and cache_path.is_file():
            with np.load(cache_path) as z:
                for k in ("hashes", "src", "pos", "exact_hashes", "exact_items"):
                    setattr(self, k, z[k])
        else:
            self._build()
            if cache_path is not None:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_path.with_name(f".{cache_path.name}.tmp{os.getpid()}.npz")
                np.savez(tmp, hashes=self.hashes, src=self.src, pos=self.pos,
                         exact_hashes=self.exact_hashes, exact_items=self.exact_items)
                os.replace(tmp, cache_path)
        present = np.zeros(1 << _TABLE_BITS, dtype=bool)
        present[self.hashes >> np.uint64(64 - _TABLE_BITS)] = True
        self.present = np.packbits(present, bitorder="little")  # 2 MiB: stays in cache

    def maybe_present(self, h: np.ndarray) -> np.ndarray:
        """Indices of the hashes that may be in the index (no false negatives)."""
        idx = h >> np.uint64(64 - _TABLE_BITS)
        bits = self.present[idx >> np.uint64(3)] >> (idx & np.uint64(7)).astype(np.uint8)
        return np.flatnonzero(bits & 1)

    def _build(self) -> None:
        if _fastscan().HAVE_NUMBA:
            return self._build_compiled()
        tb = tokenize([t for it in self.items for t in (it.problem, it.solution)])
        s = prefix(tb.values)
        h = window_hashes(s, self.n)
        pos = np.arange(len(h), dtype=np.int64)
        seg = tb.text_of(pos)
        ok = pos + self.n <= tb.text_words[seg + 1]  # windows inside one text
        h, pos, seg = h[ok], pos[ok], seg[ok]
        order = np.argsort(h, kind="stable")
        self.hashes = h[order]
        self.src = seg[order]  # text index = 2*item + (0 problem | 1 solution)
        self.pos = (pos - tb.text_words[seg])[order].astype(np.int32)
        lo, hi = tb.text_words[0:-1:2], tb.text_words[1::2]
        nonempty = np.flatnonzero(hi > lo)
        eh = span_hashes(s, lo[nonempty], hi[nonempty])
        order = np.argsort(eh, kind="stable")
        self.exact_hashes, self.exact_items = eh[order], nonempty[order]

    def _build_compiled(self) -> None:
        """The same arrays as the numpy build (same hashes, same stable order), in one pass."""
        texts = [t for it in self.items for t in (it.problem, it.solution)]
        flags = np.zeros(len(texts), dtype=np.bool_)
        flags[0::2] = True
        r = _fastscan().scan(texts, self.n, None, _TABLE_BITS, flags)
        order = np.argsort(r.hash, kind="stable")
        self.hashes = r.hash[order]
        self.src = r.text[order]
        self.pos = r.pos[order].astype(np.int32)
        nonempty = np.flatnonzero(r.n_words[0::2] > 0)
        eh = r.exact[0::2][nonempty]
        order = np.argsort(eh, kind="stable")
        self.exact_hashes, self.exact_items = eh[order], nonempty[order]

    @lru_cache(maxsize=4096)  # noqa: B019 - the index lives as long as the filter
    def text_words(self, text_index: int) -> list[str]:
        it = self.items[text_index // 2]
        return words(it.solution if text_index % 2 else it.problem)

    def __len__(self) -> int:
        return len(self.hashes)


def _lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of queries found in sorted_keys, and the first matching key position of each
    (ascending query indices)."""
    if len(sorted_keys) == 0 or len(queries) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if len(queries) > 256:  # sorted queries walk the keys in order: far fewer cache misses
        order = np.argsort(queries)
        where = np.empty(len(queries), dtype=np.int64)
        where[order] = np.searchsorted(sorted_keys, queries[order])
    else:
        where = np.searchsorted(sorted_keys, queries)
    np.minimum(where, len(sorted_keys) - 1, out=where)
    hit = np.flatnonzero(sorted_keys[where] == queries)
    return hit, where[hit]


class Decontaminator:
    """Decide, for batches of samples, whether each one is contaminated (and by what)."""

    def __init__(self, items: Sequence[BenchItem], n: int = 30, exact_problem: bool = True,
                 cache_path: Path | None = None) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self.exact_problem = exact_problem
        self.index = NgramIndex(items, n, cache_path)

    @classmethod
    def from_benchmarks(cls, benchmarks: Sequence[str | BenchmarkSpec], n: int, data_root: Path,
                        cache_dir: Path | None = None, exact_problem: bool = True,
                        hf_cache_dir: Path | None = None) -> Decontaminator:
        """Load the test sets; the n-gram index is cached under cache_dir, keyed by their content and n."""
        specs = [resolve_benchmark(b) for b in benchmarks]
        items: list[BenchItem] = []
        for s in specs:
            items.extend(load_benchmark(s, data_root, hf_cache_dir))
        cache_path = None
        if cache_dir is not None:
            key = hashlib.sha256("|".join([HASH_VERSION, str(n)] + [source_key(s, data_root) for s in specs])
                                 .encode()).hexdigest()[:24]
            cache_path = Path(cache_dir) / f"ngram-index-n{n}-{key}.npz"
        return cls(items, n, exact_problem, cache_path)

    def check(self, problems: Sequence[str | None], responses: Sequence[str | None]) -> list[Match | None]:
        """One Match (the first found: exact problem, then n-grams in text order) or None per sample."""
        if _fastscan().HAVE_NUMBA:
            return self._check_compiled(problems, responses)
        ix, n = self.index, self.n
        texts = [t for pair in zip(problems, responses, strict=True) for t in pair]
        tb = tokenize(texts)
        s = prefix(tb.values)
        out: list[Match | None] = [None] * len(problems)
        if self.exact_problem:
            lo, hi = tb.text_words[0:-1:2], tb.text_words[1::2]
            cand = np.flatnonzero(hi > lo)
            hits, where = _lookup(ix.exact_hashes, span_hashes(s, lo[cand], hi[cand]))
            for r, j in zip(cand[hits].tolist(), where.tolist(), strict=True):
                out[r] = self._verify_exact(tb.words(int(lo[r]), int(hi[r])), j)
        h = window_hashes(s, n)
        cand = ix.maybe_present(h)
        hits, where = _lookup(ix.hashes, h[cand])
        if len(hits) == 0:
            return out
        starts = cand[hits]
        segs = tb.text_of(starts)
        for i, seg, j in zip(starts.tolist(), segs.tolist(), where.tolist(), strict=True):
            r = seg // 2
            if out[r] is not None or i + n > tb.text_words[seg + 1]:
                continue
            gram = tb.words(i, i + n)
            hv = ix.hashes[j]
            while j < len(ix.hashes) and ix.hashes[j] == hv:
                src, pos = int(ix.src[j]), int(ix.pos[j])
                if ix.text_words(src)[pos:pos + n] == gram:
                    it = ix.items[src // 2]
                    out[r] = Match(it.benchmark, it.test_id, "ngram", FIELDS[seg % 2],
                                   "solution" if src % 2 else "problem", " ".join(gram))
                    break
                j += 1
        return out

    def _check_compiled(self, problems: Sequence[str | None], responses: Sequence[str | None]) -> list[Match | None]:
        ix, n = self.index, self.n
        texts = [t for pair in zip(problems, responses, strict=True) for t in pair]
        flags = np.zeros(len(texts), dtype=np.bool_)
        if self.exact_problem:
            flags[0::2] = True
        r = _fastscan().scan(texts, n, ix.present, _TABLE_BITS, flags)
        out: list[Match | None] = [None] * len(problems)
        if self.exact_problem:
            cand = np.flatnonzero(r.n_words[0::2] > 0)
            hits, where = _lookup(ix.exact_hashes, r.exact[0::2][cand])
            for i, j in zip(cand[hits].tolist(), where.tolist(), strict=True):
                out[i] = self._verify_exact(words(problems[i]), j)
        hits, where = _lookup(ix.hashes, r.hash)
        if len(hits) == 0:
            return out
        # hits are in text order; a contaminated sample has dozens: verify from its first one and
        # look at the next only when a hash hit was a collision (the words differ)
        sample_of = r.text[hits] // 2
        firsts = np.flatnonzero(np.diff(sample_of, prepend=-1))
        ends = np.append(firsts[1:], len(hits))
        for a, b in zip(firsts.tolist(), ends.tolist(), strict=True):
            i = int(sample_of[a])
            if out[i] is not None:
                continue
            for k, j in zip(hits[a:b].tolist(), where[a:b].tolist(), strict=True):
                m = self._verify(r, k, j)
                if m is not None:
                    out[i] = m
                    break
        return out

    def _verify_exact(self, sample: list[str], j: int) -> Match | None:
        """The test problems with this problem's hash (from position j): the first with the same words."""
        ix = self.index
        hv = ix.exact_hashes[j]
        while j < len(ix.exact_hashes) and ix.exact_hashes[j] == hv:
            item = int(ix.exact_items[j])
            if ix.text_words(2 * item) == sample:
                it = ix.items[item]
                return Match(it.benchmark, it.test_id, "exact_problem", "problem", "problem", " ".join(sample))
            j += 1
        return None

    def _verify(self, r: fastscan.ScanResult, k: int, j: int) -> Match | None:
        """The index entries with window k's hash (from position j): the first with the same words."""
        ix, n = self.index, self.n
        gram = r.window_words(k)  # only this window's words: no re-tokenizing of the text
        seg = int(r.text[k])
        hv = ix.hashes[j]
        while j < len(ix.hashes) and ix.hashes[j] == hv:
            src, pos = int(ix.src[j]), int(ix.pos[j])
            if ix.text_words(src)[pos:pos + n] == gram:
                it = ix.items[src // 2]
                return Match(it.benchmark, it.test_id, "ngram", FIELDS[seg % 2],
                             "solution" if src % 2 else "problem", " ".join(gram))
            j += 1
        return None

    def filter(self, samples: Iterable[Any], batch_size: int = 4096,
               get: Any = None) -> Iterator[tuple[Any, Match | None]]:
        """(sample, match) for each sample in order; `get(sample) -> (problem, response)`."""
        get = get or (lambda s: (s.problem, s.response))
        batch: list[Any] = []
        for s in samples:
            batch.append(s)
            if len(batch) >= batch_size:
                yield from self._flush(batch, get)
                batch = []
        if batch:
            yield from self._flush(batch, get)

    def _flush(self, batch: list[Any], get: Any) -> Iterator[tuple[Any, Match | None]]:
        pr = [get(s) for s in batch]
        ms = self.check([p for p, _ in pr], [r for _, r in pr])
        yield from zip(batch, ms, strict=True)
