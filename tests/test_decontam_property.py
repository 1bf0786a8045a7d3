"""Property test: the fast filter gives the same kept/removed split as the plain definition."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skymath.decontam.ngram as ngram
from skymath.decontam import BenchItem, Decontaminator, reference_contaminated

# a tiny vocabulary with punctuation/case noise, so that shared n-grams are common
WORD = st.sampled_from(["a", "B", "c", "x2", "Let", "7", "a_b", "ü", "İx", "ΣΑΣ", "ǅ", "٣"])
SEP = st.sampled_from([" ", "  ", ", ", "$", "\n", "-", "{", "}", "·", "\u200b", "\ud800"])


@st.composite
def text(draw, max_words: int = 14) -> str:
    ws = draw(st.lists(WORD, max_size=max_words))
    seps = draw(st.lists(SEP, min_size=len(ws) + 1, max_size=len(ws) + 1))
    return "".join(s + w for s, w in zip(seps, ws + [""], strict=True))


ITEMS = st.lists(st.tuples(text(), text()), min_size=0, max_size=6)
SAMPLES = st.lists(st.tuples(text(), st.one_of(st.none(), text())), min_size=1, max_size=25)


def _check(items_raw, samples, n, exact):
    items = [BenchItem("b", f"b:{i}", p, s) for i, (p, s) in enumerate(items_raw)]
    fast = Decontaminator(items, n=n, exact_problem=exact).check([p for p, _ in samples], [r for _, r in samples])
    assert [m is not None for m in fast] == reference_contaminated(samples, items, n, exact)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items_raw=ITEMS, samples=SAMPLES, n=st.integers(1, 5), exact=st.booleans())
def test_fast_filter_equals_reference(items_raw, samples, n, exact):
    _check(items_raw, samples, n, exact)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items_raw=ITEMS, samples=SAMPLES, n=st.integers(1, 4))
def test_exact_even_when_every_hash_collides(items_raw, samples, n):
    """With every word hashed to the same value all n-grams collide: the word check must decide."""
    orig = ngram.finalize
    ngram.finalize = lambda x: np.ones_like(x)
    try:
        _check(items_raw, samples, n, True)
    finally:
        ngram.finalize = orig
