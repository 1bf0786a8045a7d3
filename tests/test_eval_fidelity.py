"""Evaluation fidelity (issue 13.4): the paper's protocol (MetaMath's evaluation) reproduced
exactly, hedged answers never credited by the symbolic grader, exact values compared exactly,
the hf backend's prompt tokens identical to SFT's, and the total length budget.

The paper-protocol vectors are derived by hand from MetaMath's eval_gsm8k.py / eval_math.py /
util.py, including its quirks (rounding, first number, string match), and the four "correct
answer in an unexpected format" cases of the Skywork-Math paper's Appendix B.
"""

from __future__ import annotations

import pytest

from skymath.evaluate.extract import extract_answer
from skymath.evaluate.grade import equiv_unlimited, grade_many
from skymath.evaluate.paper_protocol import (
    cut_at_stop,
    gsm8k_prediction,
    math_equiv,
    math_prediction,
    metamath_normalize,
    paper_correct,
)


@pytest.mark.parametrize(("text", "gold", "want"), [
    ("3 + 15 = 18\nThe answer is 18", "18", True),
    ("The answer is: 18", "18", True),  # MetaMath's own prefix
    ("The answer is 17.6", "18", True),  # rounded to an integer
    ("The answer is 2.5", "2", True),  # Python's round: half to even
    ("The answer is 2.5", "3", False),
    ("The answer is 1,000,000", "1000000", False),  # the regex reads "1,000"
    ("The answer is 1,000", "1000", True),
    ("The answer is 3/4", "1", True),  # a fraction, rounded
    ("The answer is -7 dollars", "-7", True),
    ("The answer is $5$ or $6$", "5", True),  # the FIRST number: MetaMath credits this hedge
    ("The correct answer is 18", "18", False),  # Appendix B: a rephrased prefix is wrong
    ("The answer is 5.\nThe answer is 7", "7", True),  # the last prefix
    ("The answer is 5\nQuestion: next. The answer is 7", "5", True),  # generation stopped at "Question"
    ("The answer is x", "3", False),
    ("18", "18", False),  # no prefix: an invalid output
])
def test_paper_protocol_gsm8k(text: str, gold: str, want: bool) -> None:
    assert paper_correct(text, gold, "gsm8k") is want


@pytest.mark.parametrize(("pred", "gold", "want"), [
    ("\\frac{1}{2}", "\\frac{1}{2}", True),
    ("\\dfrac12", "\\frac{1}{2}", True),  # dfrac -> frac, fix_fracs
    ("0.5", "\\frac{1}{2}", True),  # the one decimal MetaMath rewrites
    ("0.25", "\\frac{1}{4}", False),  # ... and only that one
    ("1/2", "\\frac{1}{2}", True),  # a/b -> \frac{a}{b}
    ("$5$", "5", False),  # dollar signs are not stripped
    ("5 or 6", "5", False),
    ("k = 5", "5", True),  # a short left side is dropped
    ("10\\text{ cm}", "10", True),  # one right unit is dropped
    ("90^\\circ", "90", True),
    (".5", "0.5", True),
    ("\\sqrt3", "\\sqrt{3}", True),
    ("\\left( 3, 4 \\right)", "(3,4)", True),
    # Appendix B of the paper: correct values in other formats are WRONG under this protocol
    ("24\\%", "0.24", False),
    ("\\sqrt{3}, \\sqrt{2}", "\\sqrt{2}, \\sqrt{3}", False),
    ("\\frac{1}{2}+\\frac{\\sqrt{2}}{4}", "\\frac{2+\\sqrt{2}}{4}", False),
    ("x=\\frac{2401}{100}=24.01", "24.01", False),
])
def test_paper_protocol_math_equiv(pred: str, gold: str, want: bool) -> None:
    assert math_equiv(pred, gold) is want


def test_paper_protocol_math_extraction_and_fallbacks() -> None:
    assert math_prediction("so x = 2.\nThe answer is 5.\nDone.") == "5"  # cut at ".\n"
    assert math_prediction("The answer is 5\nDone") == "5\nDone"  # a newline alone does not cut
    assert paper_correct("The answer is 5\nDone", "5", "math") is False
    assert paper_correct("The answer is \\frac{3}{4}.", "\\frac34", "math") is True
    assert math_prediction("no prefix") is None and paper_correct("no prefix", "5", "math") is False
    # a normalization step that fails falls back to comparing the raw strings (MetaMath's except)
    with pytest.raises(ValueError):
        metamath_normalize("1\\text{ a}\\text{ b}")
    assert math_equiv("1\\text{ a}\\text{ b}", "1\\text{ a}\\text{ b}") is True
    assert math_equiv("1\\text{ a}\\text{ b}", "1") is False
    with pytest.raises(ValueError):
        metamath_normalize("a/b")  # int("a")
    assert math_equiv("a/b", "a/b") is True
    assert cut_at_stop("x. The answer is 4\n\n### Instruction: more") == "x. The answer is 4\n\n### "
    assert gsm8k_prediction("The answer is 5/00") is None  # MetaMath's script would crash here


def test_symbolic_grader_never_credits_a_hedge() -> None:
    text = "So it is 5 or 6.\nThe answer is $5$ or $6$."
    pred = extract_answer(text, "strict")
    assert pred == "5 or 6"
    for kind in ("gsm8k", "math"):
        assert equiv_unlimited(pred, "5", kind) is False
        assert equiv_unlimited("5 or 6", "5", kind) is False
    for hedge in ("5, 6", "5,6", "5-6", "between 5 and 6", "5 to 6"):
        assert equiv_unlimited(hedge, "5", "gsm8k") is False, hedge
    # one answer written with units or repeated stays correct
    assert extract_answer("The answer is $\\frac{1}{2}$.", "strict") == "\\frac{1}{2}"
    for ok in ("5 apples", "$5", "5 or 5", "x = 5", "5."):
        assert equiv_unlimited(ok, "5", "gsm8k") is True, ok
    assert equiv_unlimited("1,000", "1000", "gsm8k") is True


EXACT_TRAPS = [
    ("2^{2005}+1", "2^{2005}", False),
    ("2^{2005}", "2^{2005}+1", False),
    ("3^{100}-1", "3^{100}", False),
    ("10^{40}+1", "10^{40}", False),
    ("\\frac{1}{100!+1}", "\\frac{1}{100!}", False),
    ("\\frac{1}{50!}+10^{-100}", "\\frac{1}{50!}", False),
    ("\\frac{1}{2^{200}+1}", "\\frac{1}{2^{200}}", False),
    ("\\sqrt{2}^{2005}+1", "\\sqrt{2}^{2005}", False),  # irrational, differ by one
    ("\\sqrt{2}+10^{-60}", "\\sqrt{2}", False),
    ("x^{2005}+1", "x^{2005}", False),  # with a symbol: exact at the test points
    ("1267650600228229401496703205376", "2^{100}", True),
    ("\\sqrt{5+2\\sqrt{6}}", "\\sqrt{2}+\\sqrt{3}", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("2^{1002}\\sqrt{2}", "\\sqrt{2}^{2005}", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("\\frac{\\sqrt{6}}{3}", "\\sqrt{\\frac{2}{3}}", True),
]


@pytest.mark.parametrize(("pred", "gold", "want"), EXACT_TRAPS)
def test_exact_values_are_compared_exactly(pred: str, gold: str, want: bool) -> None:
    assert equiv_unlimited(pred, gold, "math") is want


def test_exact_traps_under_the_time_limit() -> None:
    """The same verdicts through grader processes with the 1 s hard limit."""
    assert grade_many([(p, g, "math") for p, g, _ in EXACT_TRAPS], processes=1) == [w for _, _, w in EXACT_TRAPS]
