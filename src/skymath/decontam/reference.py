"""The definition, written plainly (tuples of words in a set): the reference the fast filter must match.

Used by the property test and by bench/decontam_speed.py (which times its index build and its
scan separately, like the fast filter's); too slow for millions of samples.
"""

from __future__ import annotations

from collections.abc import Sequence

from skymath.decontam.benchmarks import BenchItem
from skymath.decontam.ngram import words


class ReferenceIndex:
    """Every word n-gram of the test problems and solutions as a tuple in a set, and every test
    problem's word sequence (the exact-problem rule)."""

    def __init__(self, items: Sequence[BenchItem], n: int, exact_problem: bool = True) -> None:
        self.n = n
        self.exact_problem = exact_problem
        self.grams: set[tuple[str, ...]] = set()
        self.exact: set[tuple[str, ...]] = set()
        for it in items:
            for text in (it.problem, it.solution):
                w = words(text)
                self.grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
            wp = tuple(words(it.problem))
            if wp:
                self.exact.add(wp)

    def contaminated(self, problem: str | None, response: str | None) -> bool:
        """True where the problem or response shares a word n-gram with a test problem or solution,
        or (exact_problem) the problem's word sequence equals a test problem's."""
        n = self.n
        wp = words(problem)
        if self.exact_problem and wp and tuple(wp) in self.exact:
            return True
        for w in (wp, words(response)):
            if any(tuple(w[i:i + n]) in self.grams for i in range(len(w) - n + 1)):
                return True
        return False


def reference_contaminated(samples: Sequence[tuple[str | None, str | None]], items: Sequence[BenchItem],
                           n: int, exact_problem: bool = True) -> list[bool]:
    """The definition over (problem, response) samples."""
    ref = ReferenceIndex(items, n, exact_problem)
    return [ref.contaminated(p, r) for p, r in samples]
