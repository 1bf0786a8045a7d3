"""The definition, written plainly (tuples of words in a set): the reference the fast filter must match.

Used by the property test and by bench/decontam_speed.py; too slow for millions of samples.
"""

from __future__ import annotations

from collections.abc import Sequence

from skymath.decontam.benchmarks import BenchItem
from skymath.decontam.ngram import words


def reference_contaminated(samples: Sequence[tuple[str | None, str | None]], items: Sequence[BenchItem],
                           n: int, exact_problem: bool = True) -> list[bool]:
    """True where a sample's problem or response shares a word n-gram with a test problem or solution,
    or (exact_problem) its problem's word sequence equals a test problem's."""
    grams: set[tuple[str, ...]] = set()
    exact: set[tuple[str, ...]] = set()
    for it in items:
        for text in (it.problem, it.solution):
            w = words(text)
            grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
        wp = tuple(words(it.problem))
        if wp:
            exact.add(wp)
    out = []
    for problem, response in samples:
        wp = words(problem)
        hit = exact_problem and bool(wp) and tuple(wp) in exact
        for w in (wp, words(response)):
            if hit:
                break
            hit = any(tuple(w[i:i + n]) in grams for i in range(len(w) - n + 1))
        out.append(hit)
    return out
