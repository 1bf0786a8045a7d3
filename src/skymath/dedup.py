"""Dedup of synthetic samples, keeping the first occurrence.

The key is the problem AND the response by default: MetaMath's answer augmentation writes several
different solutions of one problem on purpose, and keying on the problem alone would delete all
but one of them. `key="problem"` keys on the problem text only (one sample per problem).
Exact: the normalized key text (NFKC, lowercased, whitespace collapsed) is equal.
Near: MinHash LSH (datasketch) over token 3-gram shingles of the key text, where tokens are words
and single punctuation marks (so "x+y" and "x-y" differ); a candidate counts when its estimated
Jaccard similarity reaches the threshold.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]")
DedupKey = Literal["problem", "problem_response"]
_SEP = " \u241e "  # a separator no problem text contains: "p" + "q r" never equals "p q" + "r"


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def shingles(text: str, size: int = 3) -> set[bytes]:
    toks = _TOKEN.findall(normalize(text))
    if len(toks) < size:
        return {" ".join(toks).encode()}
    return {" ".join(toks[i:i + size]).encode() for i in range(len(toks) - size + 1)}


@dataclass(frozen=True)
class Duplicate:
    kind: str  # "exact" | "near"
    duplicate_of: str  # id of the kept record
    jaccard: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "duplicate_of": self.duplicate_of, "jaccard": round(self.jaccard, 4)}


class Deduper:
    """Stream records; `check(id, problem)` says whether an earlier one duplicates it (and remembers it if not)."""

    def __init__(self, near: bool = True, threshold: float = 0.85, num_perm: int = 128, shingle: int = 3,
                 seed: int = 1, key: DedupKey = "problem_response") -> None:
        self.key = key
        self.exact: dict[str, str] = {}
        self.near = near
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self.seed = seed
        self.sigs: dict[str, np.ndarray] = {}
        if near:
            from datasketch import MinHashLSH

            self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)

    def _minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch(list(shingles(text, self.shingle)))
        return m

    def key_text(self, problem: str, response: str | None = None) -> str:
        if self.key == "problem":
            return problem
        return problem + _SEP + (response or "")

    def check(self, rid: str, problem: str, response: str | None = None) -> Duplicate | None:
        text = self.key_text(problem, response)
        key = normalize(text)
        if key in self.exact:
            return Duplicate("exact", self.exact[key], 1.0)
        mh = None
        if self.near:
            mh = self._minhash(text)
            best: tuple[float, str] | None = None
            for cand in self.lsh.query(mh):
                j = float(np.mean(self.sigs[cand] == mh.hashvalues))
                if j >= self.threshold and (best is None or j > best[0]):
                    best = (j, cand)
            if best is not None:
                return Duplicate("near", best[1], best[0])
        self.exact[key] = rid
        if mh is not None:
            self.lsh.insert(rid, mh, check_duplication=False)
            self.sigs[rid] = mh.hashvalues.copy()
        return None

    def filter(self, records: Iterable[Any]) -> Iterator[tuple[Any, Duplicate | None]]:
        for r in records:
            yield r, self.check(r.id, r.problem, getattr(r, "response", None))
