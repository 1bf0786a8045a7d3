"""Distractor insertion keeps only variants verified not to change the answer: the configured model
solves the rewrite and must reach the gold answer (solve-check), after a structural rule; the rest
is quarantined with a reason and redrawn; a failed request is a failure, never a verdict."""

from __future__ import annotations

import json
import re

from support.fault_server import FaultServer, Rule
from support.hygiene_run import make_run, run_shard

from skymath.records import read_jsonl, read_records

IRRELEVANT = ["The weather that day was sunny and warm.", "Her cousin owns 3 bicycles.",
              "The store opened 12 years ago.", "A neighbor walked by with a small dog."]
RELEVANT = "She also finds 5 more eggs in the barn and sells them too."  # changes the answer
FAILING = "The town library has 4 floors."  # its solve-check request fails (HTTP 500)


class Scripted:
    """Rewrites and solve-checks for the first 3 GSM8K test problems (no model)."""

    def __init__(self, golds: dict[str, str]) -> None:
        self.golds = golds  # first sentence of a problem -> gold answer
        self.rewrites: dict[int, int] = {}

    def __call__(self, body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        if "irrelevant distractor" in prompt:
            problem = prompt.split("Problem:\n", 1)[1].rsplit("\n\nReply with", 1)[0].strip()
            parts = re.split(r"(?<=[.!?])\s+", problem)
            which = next(i for i, first in enumerate(self.golds) if problem.startswith(first))
            n = self.rewrites[which] = self.rewrites.get(which, 0) + 1
            insert = {0: IRRELEVANT[0], 1: RELEVANT if n == 1 else IRRELEVANT[1], 2: FAILING}[which]
            return "Rewritten problem: " + " ".join(parts[:-1] + [insert, parts[-1]])
        problem = prompt.rsplit("\nProblem: ", 1)[1].split("\nSolution:", 1)[0]
        gold = next(g for first, g in self.golds.items() if problem.startswith(first))
        answer = str(int(gold) + 10) if RELEVANT in problem else gold
        return f"Ignoring what does not matter, we compute step by step.\nThe answer is {answer}"


def test_solve_check_keeps_unchanged_answers_quarantines_the_rest_failures_are_not_verdicts(tmp_path, data_root):
    rows = [json.loads(line) for line in (data_root / "gsm8k_test.jsonl").read_text().splitlines()[:3]]
    golds = {re.split(r"(?<=[.!?])\s+", r["question"])[0]: r["final"] for r in rows}
    responder = Scripted(golds)
    rules = [Rule(FAILING, ["500"], repeat_last=True)]  # only the solve-check of problem 2 carries it
    with FaultServer(responder=responder, rules=rules) as srv:
        llm = {"llm": {"model": "gpt-4-1106-preview", "endpoints": [{"base_url": srv.base_url}], "max_retries": 1,
                       "backoff_base_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 10}}
        run = make_run(tmp_path, {"d": {"kind": "distractors",
                                        "params": {"limit": 3, "sample": "first", "counts": [1],
                                                   "failure_tolerance": 0.0}}}, llm)
        assert run_shard(run, "d") == 1  # one solve-check failed: over the tolerance, not done
        failures = read_jsonl(run.shard_path("d", 0, ".failures.jsonl"))
        assert [(f["id"], f["step"]) for f in failures] == [("gsm8k/00002#d1", "solve-check")]
        rejected = list(read_jsonl(run.shard_path("d", 0, ".rejected.jsonl")))
        assert [r["id"] for r in rejected] == ["gsm8k/00001#d1"]  # a failed request is never a verdict
        assert rejected[0]["reason"].startswith("answer changed") and RELEVANT in rejected[0]["text"]
        srv.rules.clear()  # the provider recovers: the rerun retries only what failed
        assert run_shard(run, "d") == 0
    recs = {r.id: r for r in read_records(run.output_files("d", 1))}
    assert sorted(recs) == ["gsm8k/00000#d1", "gsm8k/00001#d1", "gsm8k/00002#d1"]
    assert recs["gsm8k/00001#d1"].problem.count(IRRELEVANT[1]) == 1 and RELEVANT not in recs["gsm8k/00001#d1"].problem
    assert all(r.meta["verified"]["by"] == "solve" and r.meta["verified"]["model_answer"] == r.answer
               for r in recs.values())
    marker = run.read_marker(run.done_path("d", 0))
    assert marker["kept"] == 1 and marker["failures"] == 0
    assert marker["usage"]["requests"] == 1 and marker["usage"]["cached"] == 1  # only the failed check was resent


def test_the_structural_rule_names_what_changed():
    from skymath.stages.distractors import structure_problem

    original = "Tom has 3 apples. He buys 4 more. How many apples does he have?"
    ok = "Tom has 3 apples. The sky is blue. He buys 4 more. How many apples does he have?"
    assert structure_problem(original, ok, 1) is None
    assert structure_problem(original, ok, 2) == "inserts 1 sentences, 2 asked"
    reworded = "Tom owns 3 apples. The sky is blue. He buys 4 more. How many apples does he have?"
    assert structure_problem(original, reworded, 1).startswith("changes an original sentence")
