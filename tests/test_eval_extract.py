"""Answer extraction: strict is the paper's "The answer is" protocol; lenient adds fallbacks."""

from __future__ import annotations

import pytest

from skymath.evaluate.extract import extract_answer, last_boxed, strip_boxed
from skymath.evaluate.runner import clean_response


@pytest.mark.parametrize(("text", "want"), [
    ("3 + 4 = 7.\nThe answer is 7", "7"),
    ("The answer is 7.", "7"),
    ("The answer is 3.5.", "3.5"),
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("The answer is: 12\nextra text", "12"),
    ("First The answer is 1. Wait.\nThe answer is 2", "2"),  # the last one wins
    ("The answer is \\boxed{5}", "\\boxed{5}"),  # the grader strips the box
])
def test_strict_takes_text_after_last_prefix(text: str, want: str) -> None:
    assert extract_answer(text, "strict") == want


@pytest.mark.parametrize("text", [
    "The correct answer is 19",  # the paper's known recall loss
    "so the result is \\boxed{24}",
    "x=2401/100=24.01",
    "",
])
def test_strict_rejects_unexpected_formats(text: str) -> None:
    assert extract_answer(text, "strict") is None


@pytest.mark.parametrize(("text", "want"), [
    ("The correct answer is 19", "19"),
    ("so the result is \\boxed{24}", "24"),
    ("so $\\boxed{\\frac{a}{\\sqrt{2}}}$ then", "\\frac{a}{\\sqrt{2}}"),
    ("x=2401/100=24.01", "24.01"),
    ("Final answer: 42 apples", "42 apples"),
    ("she has 1,000 apples and 24 pears", "24"),
    ("The answer is 8", "8"),
    ("no number here", None),
])
def test_lenient_fallbacks(text: str, want: str | None) -> None:
    assert extract_answer(text, "lenient") == want


def test_bad_mode_is_an_error() -> None:
    with pytest.raises(ValueError):
        extract_answer("The answer is 1", "loose")


def test_last_boxed_nesting_fbox_and_braceless() -> None:
    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}}") == "x^{2}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("so \\boxed 5 done") == "5"
    assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("nothing") is None
    assert strip_boxed("x = \\boxed{3} and \\boxed{4}") == "x = 3 and 4"


def test_real_math_solutions_give_their_gold(data_root) -> None:
    import json

    rows = [json.loads(line) for line in open(data_root / "math_test.jsonl", encoding="utf-8")]
    for r in rows:
        assert last_boxed(r["solution"]) == r["answer"].strip(), r["unique_id"]


def test_clean_response_cuts_an_invented_next_turn() -> None:
    text = "2 + 2 = 4.\nThe answer is 4\n\n### Instruction:\nWhat is 5+5?\n### Response: The answer is 10"
    cleaned = clean_response(text)
    assert cleaned.endswith("The answer is 4")
    assert extract_answer(cleaned) == "4"
