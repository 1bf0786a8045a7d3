"""MetaMathQA-style augmentation: answer augmentation, rephrasing, FOBAR, self-verification."""

from __future__ import annotations

from skymath.prompts import render
from skymath.records import Record
from skymath.synth.answer import answers_match, is_refusal
from skymath.synth.backward import fobar_question, maskable_numbers, self_verification_question
from skymath.synth.methods.base import Caller, Method, Outcome, Unit, answer_problem, clean_problem
from skymath.synth.params import METAMATH_SUBS, MetaMathParams


class MetaMath(Method):
    name = "metamath"
    params: MetaMathParams

    def plan(self, seed: Record) -> list[Unit]:
        units = []
        has_gold = bool(seed.answer and seed.answer.strip())
        has_numbers = bool(maskable_numbers(seed.problem))
        for sub in METAMATH_SUBS:
            n = self.params.samples.get(sub, 0)
            if sub in ("fobar", "self_verification") and not (has_gold and has_numbers):
                continue  # no backward question without a known answer and a number to mask
            units.extend(Unit(seed, self.name, sub, i) for i in range(n))
        return units

    async def run(self, unit: Unit, caller: Caller) -> Outcome:
        out = caller.outcome
        seed = unit.seed
        label = unit.key
        gold = seed.answer if (seed.answer and seed.answer.strip()) else None
        meta: dict = {}
        if unit.sub_method == "answer_aug":
            problem = seed.problem
            expected = gold
        elif unit.sub_method == "rephrase":
            res = await caller.chat(label + "|rephrase", render("synth/rephrase", problem=seed.problem),
                                    unit.sample_index)
            problem = clean_problem(res.text)
            if len(problem) < self.settings.min_problem_chars or is_refusal(problem):
                out.rejected.append({"reason": "rephrase unusable (too short or refusal)", "text": res.text})
                return out
            expected = gold
            meta["rephrased_from"] = seed.id
        else:
            build = fobar_question if unit.sub_method == "fobar" else self_verification_question
            bq = build(seed.problem, gold or "", unit.sample_index)
            if bq is None:
                out.rejected.append({"reason": "no backward question (nothing to mask)", "text": seed.problem})
                return out
            problem = bq.question
            expected = bq.masked_value
            meta.update({"masked_value": bq.masked_value, "masked_index": bq.index, "variable": bq.var})
        final, reason, res = await answer_problem(caller, problem, label + "|answer", unit.sample_index)
        if final is None:
            out.rejected.append({"reason": reason, "text": res.text})
            return out
        matched = answers_match(final.answer, expected) if expected is not None else None
        if self.settings.match_gold and expected is not None and not matched:
            out.rejected.append({"reason": f"answer mismatch (got {final.answer!r}, expected {expected!r})",
                                 "text": res.text})
            return out
        out.records.append(self.make_record(unit, problem, final, caller, res, gold_match=matched, **meta))
        return out
