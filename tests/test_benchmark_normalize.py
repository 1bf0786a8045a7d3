"""GSM8K test solutions are decontaminated as text a model writes: without the `<<a*b=c>>`
calculator annotations and without the `#### N` answer line (what the benchmark's own parsing
reads as the answer). A real GSM8K test solution copied into a synthetic response is caught."""

from __future__ import annotations

from skymath.decontam import BenchmarkSpec, Decontaminator, load_benchmark
from skymath.decontam.benchmarks import normalize_solution, resolve_benchmark, source_key
from skymath.records import read_jsonl


def test_gsm8k_solutions_are_normalized(data_root):
    items = load_benchmark("gsm8k", data_root)
    assert len({it.test_id for it in items}) == 1319
    normalized = {}
    for it in items:  # the normalized form first; the raw form follows under the same id
        normalized.setdefault(it.test_id, it.solution)
    assert not any("<<" in t or "####" in t for t in normalized.values())
    assert normalized["gsm8k:0"] == ("Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
                                 "She makes 9 * 2 = $18 every day at the farmer’s market.")
    assert normalize_solution("x = <<2+3=5>>5\n#### 5", "plain") == "x = <<2+3=5>>5\n#### 5"  # MATH untouched
    # the index cache is keyed by the normalization: an index built from raw text is never reused
    raw = BenchmarkSpec(name="gsm8k", path="gsm8k_test.jsonl", problem_field="question", solution_field="answer")
    assert source_key(raw, data_root) != source_key(resolve_benchmark("gsm8k"), data_root)


def test_a_real_gsm8k_solution_inside_a_synthetic_response_is_removed(data_root):
    rows = list(read_jsonl(data_root / "gsm8k_test.jsonl"))
    def longest_plain_run(text: str) -> int:  # words in a row without an annotation or the #### line
        run = best = 0
        for w in text.split():
            run = 0 if ("<<" in w or w == "####") else run + 1
            best = max(best, run)
        return best

    # a test solution long enough for a 30-gram once normalized, whose raw text has an annotation
    # in every 30 words (most of them): as a model would write it, without calculator notes
    row = next(r for r in rows if len(normalize_solution(r["answer"], "gsm8k").split()) >= 45
               and longest_plain_run(r["answer"]) < 25)
    written = normalize_solution(row["answer"], "gsm8k")
    response = f"Let us work through it carefully.\n{written}\nThe answer is {row['final']}"
    problem = "A farmer sells apples and pears at two different markets each week. How much does he earn?"
    normalized = Decontaminator(load_benchmark("gsm8k", data_root), n=30)
    (m,) = normalized.check([problem], [response])
    assert m is not None and m.benchmark == "gsm8k" and m.field == "response" and m.test_field == "solution"
    assert len(m.ngram.split()) == 30
    # the raw test file (annotations, #### line) shares no 30-gram with the same response
    raw = BenchmarkSpec(name="gsm8k", path="gsm8k_test.jsonl", problem_field="question", solution_field="answer")
    assert "<<" in row["answer"]
    assert Decontaminator(load_benchmark(raw, data_root), n=30).check([problem], [response]) == [None]
