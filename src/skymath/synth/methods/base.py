"""What every method shares: units of work, the request wrapper, answering, record building.

A *unit* is (seed, method, sub-method, sample index): the resumable grain of a shard. Running a
unit sends one or more requests and yields records (ids stable from the unit and the depth),
rejected outputs (quarantined with a reason) or a permanent request failure.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from skymath.prompts import render
from skymath.records import Record
from skymath.synth.answer import Final, finalize, is_refusal
from skymath.synth.client import ChatRequest, ChatResult, LLMClient


@dataclass(frozen=True)
class Unit:
    seed: Record
    method: str
    sub_method: str
    sample_index: int

    @property
    def key(self) -> str:
        return f"{self.seed.id}|{self.method}|{self.sub_method}|{self.sample_index}"


@dataclass
class Settings:
    """Stage-level knobs every method reads."""

    stage: str
    temperature: float | None = None
    max_tokens: int | None = None
    few_shot: bool = True
    drop_truncated: bool = True
    match_gold: bool = True
    min_problem_chars: int = 20
    min_length_ratio: float = 0.3
    model: str = ""


@dataclass
class Outcome:
    records: list[Record] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    failure: dict[str, Any] | None = None
    usage: dict[str, int] = field(default_factory=lambda: {"requests": 0, "cached": 0, "prompt_tokens": 0,
                                                           "completion_tokens": 0})


class RequestFailed(Exception):
    def __init__(self, result: ChatResult) -> None:
        super().__init__(result.error)
        self.result = result


def record_id(stage: str, unit: Unit, depth: int = 0) -> str:
    """Stable id from (stage, seed id, method, sub-method, sample index, depth)."""
    raw = f"{stage}|{unit.key}|{depth}"
    return "syn-" + hashlib.blake2b(raw.encode("utf-8"), digest_size=10).hexdigest()


class Caller:
    """The client as one unit sees it: stage sampling defaults, per-unit usage, failures raised."""

    def __init__(self, client: LLMClient, settings: Settings, outcome: Outcome) -> None:
        self.client = client
        self.settings = settings
        self.outcome = outcome
        self.model = client.endpoints[0][1]

    async def chat(self, label: str, prompt: str, sample_index: int) -> ChatResult:
        req = ChatRequest(key=label, messages=[{"role": "user", "content": prompt}],
                          temperature=self.settings.temperature, max_tokens=self.settings.max_tokens,
                          sample_index=sample_index)
        res = await self.client.achat(req)
        u = self.outcome.usage
        u["requests"] += 1
        u["cached"] += int(res.cached)
        if not res.cached:
            u["prompt_tokens"] += int(res.usage.get("prompt_tokens", 0))
            u["completion_tokens"] += int(res.usage.get("completion_tokens", 0))
        if not res.ok:
            raise RequestFailed(res)
        return res

    def sampling(self) -> dict[str, Any]:
        c = self.client.llm
        return {"temperature": c.temperature if self.settings.temperature is None else self.settings.temperature,
                "max_tokens": c.max_tokens if self.settings.max_tokens is None else self.settings.max_tokens}


async def answer_problem(caller: Caller, problem: str, label: str, sample_index: int
                         ) -> tuple[Final | None, str | None, ChatResult]:
    """Chain-of-thought answer in the canonical format, or (None, reason) when unusable."""
    prompt = render("synth/answer", problem=problem, few_shot=caller.settings.few_shot)
    res = await caller.chat(label, prompt, sample_index)
    if caller.settings.drop_truncated and res.finish_reason == "length":
        return None, "truncated (finish_reason=length)", res
    final, reason = finalize(res.text)
    if final is not None and is_refusal(res.text or ""):
        return None, "refusal or unsolvable", res
    return final, reason, res


_LABEL_RE = re.compile(r"^\s*(?:\*\*|#+\s*)?(?:new|rewritten|rephrased|refined|corrected)\s+(?:problem|question)"
                       r"\s*(?:\*\*)?\s*:?\s*(?:\*\*)?\s*", re.IGNORECASE)


def clean_problem(text: str | None) -> str:
    """Strip a leading label ('New problem:'), surrounding quotes and blank space."""
    t = (text or "").strip()
    t = _LABEL_RE.sub("", t, count=1).strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        t = t[1:-1].strip()
    return t


class Method(ABC):
    """Subclasses: `name`, `sub_methods(params)`, `plan(seed)`, `async run(unit, caller)`."""

    name = ""

    def __init__(self, params: Any, settings: Settings) -> None:
        self.params = params
        self.settings = settings

    @abstractmethod
    def plan(self, seed: Record) -> list[Unit]:
        """The units of work (requests chains) for one seed, with stable ids."""

    @abstractmethod
    async def run(self, unit: Unit, caller: Caller) -> Outcome:
        """Run one unit through the LLM client; returns its records or its failure."""

    def make_record(self, unit: Unit, problem: str, final: Final, caller: Caller, res: ChatResult,
                    depth: int = 0, parent_id: str | None = None, sub_method: str | None = None,
                    **meta: Any) -> Record:
        seed = unit.seed
        return Record(
            id=record_id(self.settings.stage, unit, depth),
            problem=problem,
            response=final.response,
            answer=final.answer,
            source=seed.source,
            level=seed.level,
            subject=seed.subject,
            method=self.name,
            stage=self.settings.stage,
            parent_id=parent_id or seed.id,
            meta={
                "sub_method": sub_method or unit.sub_method,
                "sample_index": unit.sample_index,
                "depth": depth,
                "seed_id": seed.id,
                "model": res.model or caller.model,
                "sampling": {**caller.sampling(), "seed": res.seed},
                "usage": dict(caller.outcome.usage),
                "answer_from": final.source,
                "finish_reason": res.finish_reason,
                **meta,
            },
        )
