"""Decontamination: drop synthetic samples that share a word n-gram with a benchmark test set.

Definition: words are `re.findall(r"\\w+", text.lower())`; a sample is contaminated when any word
n-gram of its problem or response equals a word n-gram of any test problem or solution, or when its
problem's word sequence equals a test problem's (a 30-gram cannot catch problems under 30 words).
"""

from skymath.decontam.benchmarks import BUILTIN, BenchItem, BenchmarkSpec, load_benchmark, resolve_benchmark
from skymath.decontam.filter import Decontaminator, Match, NgramIndex
from skymath.decontam.ngram import words
from skymath.decontam.reference import ReferenceIndex, reference_contaminated

__all__ = [
    "BUILTIN", "BenchItem", "BenchmarkSpec", "Decontaminator", "Match", "NgramIndex", "load_benchmark",
    "ReferenceIndex", "reference_contaminated", "resolve_benchmark", "words",
]
