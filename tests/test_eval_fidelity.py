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


# ---- the hf backend's prompt tokens and the total length budget --------------------------------------------

@pytest.fixture(scope="module")
def bos_model(tmp_path_factory, tiny_model):
    """The tiny model with a tokenizer that adds BOS, as LLaMA/Mistral tokenizers do."""
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("bos_model")
    for f in ("config.json", "generation_config.json", "model.safetensors"):
        (d / f).symlink_to(tiny_model / f)
    AutoTokenizer.from_pretrained(tiny_model, add_bos_token=True).save_pretrained(d)
    return d


@pytest.mark.parametrize("style", ["alpaca", "chat"])
def test_eval_prompt_tokens_equal_the_training_prompt_tokens(bos_model, style) -> None:
    from skymath.evaluate.backends.hf import HFBackend
    from skymath.evaluate.runner import build_prompt
    from skymath.train.data import DataSettings, encode

    be = HFBackend(str(bos_model), batch_size=2, add_special_tokens=style == "alpaca", threads=1)
    problem = "Janet has 3 apples and buys 4 more. How many apples does she have?"
    ids, labels, _ = encode(be.tokenizer, problem, "3 + 4 = 7.\nThe answer is 7", DataSettings(prompt_style=style))
    train_prompt = [t for t, lab in zip(ids, labels, strict=True) if lab == -100]
    eval_prompt = be.encode_prompts([build_prompt(problem, style, be.tokenizer)])[0]
    assert eval_prompt == train_prompt
    if style == "alpaca":
        assert eval_prompt[0] == be.tokenizer.bos_token_id  # the BOS SFT trained with (dropped before the fix)
    gen = be.generate([build_prompt(problem, style, be.tokenizer)], 2)[0]
    assert gen.prompt_tokens == len(train_prompt) and gen.completion_tokens <= 2
    be.close()


def test_hf_max_length_is_the_total_budget(tiny_model) -> None:
    """Each answer gets max_length minus ITS prompt, also inside one batch; a prompt that fills
    the budget gets nothing (wrong, not an error)."""
    from skymath.evaluate.backends.hf import HFBackend

    short, long = "What is 2+2?", "Compute the sum of the first twenty positive integers, then add 7 to it."
    be = HFBackend(str(tiny_model), batch_size=4, threads=1, stop=())
    n_short, n_long = (len(x) for x in be.encode_prompts([short, long]))
    be.max_length = n_long + 3  # the long prompt may add 3 tokens, the short one more
    gens = be.generate([short, long, long * 5], 40)
    assert gens[1].completion_tokens <= 3 and gens[1].prompt_tokens + gens[1].completion_tokens <= be.max_length
    assert gens[0].completion_tokens <= n_long + 3 - n_short
    assert gens[0].prompt_tokens + gens[0].completion_tokens <= be.max_length
    assert gens[0].completion_tokens > 3 or gens[0].finish_reason == "stop"
    assert (gens[2].text, gens[2].completion_tokens, gens[2].finish_reason, gens[2].error) == ("", 0, "length", None)
    be.close()


def test_openai_max_length_is_the_total_budget(data_root) -> None:
    from support.eval_faults import bench_items, eval_server, llm_block

    from skymath.config.llm import LLMConfig
    from skymath.evaluate.backends.openai import OpenAIBackend

    items = bench_items(data_root, gsm8k=2, math=1)
    sent: list[int] = []
    with eval_server(items, on_request=lambda n, body: sent.append(body["max_tokens"])) as srv:
        be = OpenAIBackend(srv.model, llm=LLMConfig(**llm_block(srv)), max_length=200)
        assert be.counter_name == "approx (4 chars/token)"  # no tokenizer offline for an unknown API model
        prompts = [items[0]["problem"], "x" * 1200]  # the second alone is ~300 tokens: over the budget
        gens = be.generate(prompts, 1000)
        be.close()
    assert sent == [200 - len(prompts[0]) // 4]
    assert gens[0].text and gens[0].error is None
    assert (gens[1].text, gens[1].finish_reason, gens[1].error) == ("", "length", None)
