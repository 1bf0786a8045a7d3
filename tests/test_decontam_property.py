"""Property test: the fast filter gives the same kept/removed split as the plain definition, on
both of its paths (the compiled kernel and the numpy fallback), which also build identical indexes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skymath.decontam.ngram as ngram
from skymath.decontam import BenchItem, Decontaminator, fastscan, reference_contaminated

PATHS = ["compiled", "numpy"]


@pytest.fixture
def path(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setattr(fastscan, "HAVE_NUMBA", False)
    else:
        assert fastscan.HAVE_NUMBA, "numba is a dependency: the compiled path must be available"
    return request.param

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


@pytest.mark.parametrize("path", PATHS, indirect=True)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(items_raw=ITEMS, samples=SAMPLES, n=st.integers(1, 5), exact=st.booleans())
def test_fast_filter_equals_reference(path, items_raw, samples, n, exact):
    _check(items_raw, samples, n, exact)


@pytest.mark.parametrize("path", PATHS, indirect=True)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(items_raw=ITEMS, samples=SAMPLES, n=st.integers(1, 4))
def test_exact_even_when_every_hash_collides(path, items_raw, samples, n):
    """With every word hashed to the same value all n-grams collide: the word check must decide."""
    orig = ngram.finalize
    ngram.finalize = lambda x: np.ones_like(x)
    fastscan.FORCE_COLLISIONS = True
    try:
        _check(items_raw, samples, n, True)
    finally:
        ngram.finalize = orig
        fastscan.FORCE_COLLISIONS = False


@settings(max_examples=60, deadline=None)
@given(items_raw=ITEMS, n=st.integers(1, 5))
def test_both_paths_build_the_same_index(items_raw, n):
    """Same hashes, same order: an index cached by one path serves the other."""
    items = [BenchItem("b", f"b:{i}", p, s) for i, (p, s) in enumerate(items_raw)]
    compiled = Decontaminator(items, n=n).index
    fastscan.HAVE_NUMBA = False
    try:
        plain = Decontaminator(items, n=n).index
    finally:
        fastscan.HAVE_NUMBA = True
    for k in ("hashes", "src", "pos", "exact_hashes", "exact_items"):
        a, b = getattr(compiled, k), getattr(plain, k)
        assert a.dtype == b.dtype and np.array_equal(a, b), k
