"""Deterministic pieces of the methods: FOBAR / self-verification on real problems, the answer
format, the Xwin section parser, Evol elimination and strategy choice, the method mix."""

from __future__ import annotations

from collections import Counter

from support.synth_helpers import real_seeds

from skymath.records import Record
from skymath.synth.answer import answers_match, finalize
from skymath.synth.backward import fobar_question, maskable_numbers, self_verification_question
from skymath.synth.engine import assign_methods
from skymath.synth.methods.base import Settings, record_id
from skymath.synth.methods.evol import choose_strategy, elimination_reason
from skymath.synth.methods.metamath import MetaMath
from skymath.synth.methods.xwin import pick_problem
from skymath.synth.params import MetaMathParams


def test_fobar_and_self_verification_on_real_gsm8k_and_math():
    seeds = {s["id"]: s for s in real_seeds(2, 3)}
    natalia = seeds["gsm8k_train/0"]
    b = fobar_question(natalia["problem"], natalia["answer"], 0)
    assert b.question == (
        "Natalia sold clips to X of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?\n"
        "If we know the answer to the above question is 72, what is the value of the unknown variable X?")
    assert b.masked_value == "48"
    sv = self_verification_question(natalia["problem"], natalia["answer"], 0)
    assert sv.question == (
        "Natalia sold clips to X of her friends in April, and then she sold half as many clips in May. "
        'The answer to the question "How many clips did Natalia sell altogether in April and May?" is 72. '
        "What is the value of the unknown variable X?")
    weng = seeds["gsm8k_train/1"]  # two numbers: masked in turn, cycling
    qs = [fobar_question(weng["problem"], weng["answer"], i) for i in range(3)]
    assert [q.masked_value for q in qs] == ["12", "50", "12"] and qs[0] == fobar_question(weng["problem"], "10", 0)
    assert "Weng earns $X an hour" in qs[0].question and "did X minutes" in qs[1].question
    for s in seeds.values():
        if s["source"] != "math_train":
            continue
        nums = maskable_numbers(s["problem"])
        b = fobar_question(s["problem"], s["answer"], 0)
        assert b is not None and b.masked_value == nums[0][2].replace(",", "")
        assert b.question.endswith(f"is {s['answer']}, what is the value of the unknown variable {b.var}?")
        assert b == fobar_question(s["problem"], s["answer"], 0)  # deterministic
    # exponents, subscripts, word-internal digits and Asymptote code are never masked
    assert [n[2] for n in maskable_numbers("Let $x^2 + a_1 = 10$ for MP3 [asy]draw((0,0)--(5,5));[/asy] and 2.5")] \
        == ["10", "2.5"]


def test_metamath_plan_skips_backward_without_gold_or_numbers():
    mm = MetaMath(MetaMathParams(samples={"answer_aug": 2, "rephrase": 1, "fobar": 1, "self_verification": 1}),
                  Settings(stage="s"))
    with_gold = Record(id="a", problem="Tom has 3 apples and buys 4. How many?", answer="7")
    no_gold = Record(id="b", problem="Tom has 3 apples and buys 4. How many?")
    no_nums = Record(id="c", problem="What is the sum of the roots of a monic cubic?", answer="0")
    assert Counter(u.sub_method for u in mm.plan(with_gold)) == {"answer_aug": 2, "rephrase": 1, "fobar": 1,
                                                                  "self_verification": 1}
    assert {u.sub_method for u in mm.plan(no_gold)} == {"answer_aug", "rephrase"}
    assert {u.sub_method for u in mm.plan(no_nums)} == {"answer_aug", "rephrase"}
    units = mm.plan(with_gold)
    ids = {record_id("s", u) for u in units}
    assert len(ids) == len(units) and ids == {record_id("s", u) for u in mm.plan(with_gold)}


def test_answer_format_is_canonical():
    f, why = finalize("2 + 3 = 5, so\nThe answer is: $5$.")
    assert why is None and f.response == "2 + 3 = 5, so\nThe answer is 5" and f.source == "prefix"
    f, _ = finalize("We get $\\boxed{\\frac{1}{2}}$ as the probability.")
    assert f.answer == "\\frac{1}{2}" and f.response.endswith("probability.\nThe answer is \\frac{1}{2}")
    f, _ = finalize("Adding the two parts.\nSo x = 12.")
    assert f.answer == "12" and f.source == "last_line"
    assert finalize("Step 2: Determine the number of clips")[0] is None  # a heading is not an answer
    assert finalize("")[1] == "empty response" and finalize("The answer is 3")[1] == "no reasoning before the answer"
    assert answers_match("\\dfrac{1}{2}", "0.5") and answers_match("1,080", "1080")
    assert answers_match("x^2+1", "1+x^2") and not answers_match("3", "4")


def test_xwin_parser_is_forgiving():
    flawed = ("### Refined problem\nA train goes 60 km in 2 h. Find its speed in km/h.\n### Verification\nUnits "
              "missing.\n### Verdict\nflawed\n### Corrected problem\nA train covers 60 km in 2 hours at constant "
              "speed. What is its speed in km/h?")
    q, info = pick_problem(flawed)
    assert q.startswith("A train covers 60 km") and info["verdict"] == "flawed" and info["chosen"] == "corrected"
    bold = "**Refined problem:** How many primes are below 20?\n**Verdict:** correct"
    q, info = pick_problem(bold)
    assert q == "How many primes are below 20?" and info["chosen"] == "refined"
    q, info = pick_problem("How many divisors does 36 have?")
    assert q == "How many divisors does 36 have?" and info["chosen"] == "fallback-whole-reply"


def test_evol_elimination_and_strategy_choice():
    parent = "A farmer has 12 cows and buys 5 more. How many cows does he have now?"
    assert elimination_reason(parent, parent, 20, 0.3) == "unchanged problem"
    assert "leaked" in elimination_reason(parent, "Here is the new problem: a farmer has 20 cows...", 20, 0.3)
    assert elimination_reason(parent, "I'm sorry, I cannot create that.", 20, 0.3) == "refusal"
    assert elimination_reason(parent, "Find 2+2.", 20, 0.3) == "too short"
    good = "A farmer has 12 cows and 7 goats. He buys 5 cows and sells 2 goats. How many animals now?"
    assert elimination_reason(parent, good, 20, 0.3) is None
    w = {"rewrite": 1, "add_constraints": 1, "deepen": 1, "concretize": 1, "increase_reasoning": 1}
    picks = Counter(choose_strategy(w, f"seed{i}", 0, d) for i in range(400) for d in (1, 2))
    assert set(picks) == set(w) and min(picks.values()) > 100  # all five, roughly balanced
    assert choose_strategy(w, "s", 0, 1) == choose_strategy(w, "s", 0, 1)
    assert {choose_strategy({"deepen": 1, "rewrite": 0}, f"x{i}", 0, 1) for i in range(20)} == {"deepen"}


def test_method_mix_is_exact_and_deterministic():
    got = assign_methods(12, {"metamath": 1, "evol": 2, "xwin": 1}, "split")
    assert Counter(m for ms in got for m in ms) == {"metamath": 3, "evol": 6, "xwin": 3}
    assert got == assign_methods(12, {"metamath": 1, "evol": 2, "xwin": 1}, "split")
    assert assign_methods(2, {"metamath": 1, "evol": 0, "xwin": 1}, "all") == [["metamath", "xwin"]] * 2


def test_evol_accepts_a_genuine_added_constraint_and_rejects_copies():
    """The add_constraints strategy appends a few words to a long problem: the old character
    similarity (> 0.95 = unchanged) threw those away; a copy, a reformatting or a deletion is
    still 'unchanged'."""
    import difflib

    from skymath.synth.methods.evol import added_content

    (seed,) = [s for s in real_seeds(0, 40, math_levels=(5,)) if len(s["problem"]) > 400][:1]
    parent = seed["problem"]
    child = parent + " Assume the number of rows is odd."
    norm_p, norm_c = " ".join(parent.lower().split()), " ".join(child.lower().split())
    assert difflib.SequenceMatcher(None, norm_p, norm_c).ratio() > 0.95  # the old rule called this unchanged
    assert elimination_reason(parent, child, 20, 0.3) is None
    assert {"assume", "odd"} <= set(added_content(parent, child))
    reformatted = "  " + parent.upper().replace(" ", "\n ") + "  "
    assert elimination_reason(parent, reformatted, 20, 0.3) == "unchanged problem"
    assert elimination_reason(parent, parent.replace(",", ";").replace("?", "."), 20, 0.3) == "unchanged problem"
    words = parent.split()
    shortened = " ".join(words[: len(words) * 2 // 3])  # only removes words: nothing new
    assert elimination_reason(parent, shortened, 20, 0.3) == "unchanged problem"
    assert elimination_reason(parent, parent + " What is the answer?", 20, 0.3) is None  # new words
    changed_number = parent.replace("1", "7", 1) if "1" in parent else parent + " 7"
    assert elimination_reason(parent, changed_number, 20, 0.3) is None
