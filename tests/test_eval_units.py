"""Metrics, benchmark loading, backend request ordering (vLLM's logic without vLLM), config checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from skymath.errors import UserError
from skymath.evaluate.backends import load_backend
from skymath.evaluate.backends.base import Generation, in_request_order, length_sorted_batches
from skymath.evaluate.backends.vllm import to_generations
from skymath.evaluate.benchmarks import BenchmarkSpec, load_benchmark, load_items, pick
from skymath.evaluate.metrics import bootstrap_ci, compute_metrics


def _row(bench, kind, ok, level=None, subject=None, d=None, lenient=None):
    return {"benchmark": bench, "kind": kind, "level": level, "subject": subject, "distractors": d,
            "correct_strict": ok, "correct_lenient": ok if lenient is None else lenient, "completion_tokens": 10}


def test_metrics_overall_level_subject_distractors() -> None:
    rows = [_row("math", "math", True, 1, "Algebra"), _row("math", "math", False, 1, "Algebra", lenient=True),
            _row("math", "math", False, 5, "Geometry"), _row("gsm8k", "gsm8k", True), _row("gsm8k", "gsm8k", False),
            _row("gsm8k_distractors", "gsm8k", False, d=1), _row("gsm8k_distractors", "gsm8k", True, d=1),
            _row("gsm8k_distractors", "gsm8k", False, d=3)]
    m = compute_metrics(rows)
    math = m["benchmarks"]["math"]
    assert math["overall"]["n"] == 3
    assert math["overall"]["strict"] == pytest.approx(1 / 3, abs=1e-5)
    assert math["overall"]["lenient"] == pytest.approx(2 / 3, abs=1e-5)
    assert math["by_level"]["1"]["strict"] == 0.5 and math["by_level"]["5"]["strict"] == 0.0
    assert list(math["by_subject"]) == ["Algebra", "Geometry"]  # the paper's subject order
    assert "by_level" not in m["benchmarks"]["gsm8k"]
    assert m["by_distractors"]["0"]["strict"] == 0.5  # plain GSM8K is the 0 point
    assert m["by_distractors"]["1"]["n"] == 2 and m["by_distractors"]["3"]["strict"] == 0.0
    lo, hi = math["overall"]["strict_ci"]
    assert 0.0 <= lo <= 1 / 3 <= hi <= 1.0


def test_bootstrap_ci_is_deterministic_and_narrows_with_n() -> None:
    small = bootstrap_ci([1, 0] * 10)
    big = bootstrap_ci([1, 0] * 1000)
    assert small == bootstrap_ci([1, 0] * 10)
    assert small[0] < big[0] < 0.5 < big[1] < small[1]
    assert bootstrap_ci([1] * 30) == (1.0, 1.0)


def test_benchmarks_load_real_files_with_limits(data_root) -> None:
    gsm = load_benchmark(BenchmarkSpec(name="gsm8k", limit=5, sample="first"), data_root)
    assert [it["gold"] for it in gsm][:1] == ["18"] and gsm[0]["id"] == "gsm8k/00000"
    math = load_benchmark(BenchmarkSpec(name="math", limit=14), data_root)
    assert {it["subject"] for it in math} == {
        "Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra", "Number Theory",
        "Prealgebra", "Precalculus"}  # "spread" covers every subject
    assert all(1 <= it["level"] <= 5 for it in math)
    m500 = load_benchmark(BenchmarkSpec(name="math500"), data_root)
    assert len(m500) == 500 and m500[0]["kind"] == "math"
    items = load_items([BenchmarkSpec(name="gsm8k", limit=2), BenchmarkSpec(name="math", limit=2)], data_root)
    assert [it["index"] for it in items] == [0, 1, 2, 3]
    assert pick(10, 3, "spread") == [0, 3, 6] and pick(10, 3, "first") == [0, 1, 2] and pick(2, 5, "first") == [0, 1]


def test_benchmark_spec_errors(data_root, tmp_path) -> None:
    with pytest.raises(ValueError):
        BenchmarkSpec(name="mystery")
    with pytest.raises(UserError, match="not found"):
        load_benchmark(BenchmarkSpec(name="x", source=str(tmp_path / "nope.jsonl")), data_root)
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"question": "q?"}\n')
    with pytest.raises(UserError, match=r"b.jsonl:1: row has no gold"):
        load_benchmark(BenchmarkSpec(name="mine", source=str(bad), kind="gsm8k"), data_root)


@dataclass
class _Completion:
    text: str
    token_ids: list[int]
    finish_reason: str = "stop"


@dataclass
class _RequestOutput:  # the fields of vllm.RequestOutput the backend reads
    request_id: str
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[_Completion] = field(default_factory=list)


def test_vllm_outputs_are_put_back_in_request_order() -> None:
    prompts = ["p0", "p1", "p2", "p3"]
    # a second call on the same LLM: ids continue from the first call (10..13), finish out of order
    outs = [_RequestOutput(str(10 + i), p, [1] * (i + 1), [_Completion(f"answer {i}", [5] * i)]) for i, p in enumerate(prompts)]
    shuffled = [outs[2], outs[0], outs[3], outs[1]]
    gens = to_generations(shuffled, prompts)
    assert [g.text for g in gens] == ["answer 0", "answer 1", "answer 2", "answer 3"]
    assert [g.index for g in gens] == [0, 1, 2, 3]
    assert [g.prompt_tokens for g in gens] == [1, 2, 3, 4] and gens[3].completion_tokens == 3
    outs[1].prompt = "wrong"
    with pytest.raises(RuntimeError, match="does not belong"):
        to_generations(shuffled, prompts)
    with pytest.raises(RuntimeError, match="3 outputs for 4 prompts"):
        to_generations(shuffled[:3], prompts)


def test_vllm_backend_without_vllm_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("SKYMATH_VLLM_PYTHON", "/nonexistent/vllm-env/bin/python")
    with pytest.raises(UserError, match="no vLLM environment: SKYMATH_VLLM_PYTHON=.* does not exist"):
        load_backend("vllm", "some/model")
    with pytest.raises(UserError, match="unknown eval backend"):
        load_backend("tgi", "some/model")


def test_length_batches_and_request_order() -> None:
    batches = length_sorted_batches([5, 50, 7, 49, 6], 2)
    assert batches == [[1, 3], [2, 4], [0]]
    gens = [Generation(i, str(i)) for b in batches for i in b]
    assert [g.text for g in in_request_order(gens, 5)] == ["0", "1", "2", "3", "4"]
    with pytest.raises(RuntimeError):
        in_request_order(gens[:-1], 5)


def test_eval_stage_config_checks(tmp_path) -> None:
    from skymath.config import config_from_dict

    def cfg(stages):
        return config_from_dict({"run": {"root": str(tmp_path)}, "stages": stages}, "t.yaml")

    with pytest.raises(UserError, match=r"needs `depends_on: \[sft-1\]`"):
        cfg({"sft-1": {"kind": "eval", "params": {"model": "tiny:smollm2"}},
             "ev": {"kind": "eval", "params": {"model": "stage:sft-1"}}})
    with pytest.raises(UserError, match="is not a distractors stage"):
        cfg({"ev": {"kind": "eval", "params": {"model": "tiny", "distractors_from": "nope"}}})
    with pytest.raises(UserError, match="benchmarks.0.limit"):
        cfg({"ev": {"kind": "eval", "params": {"model": "tiny", "benchmarks": [{"name": "gsm8k", "limit": 0}]}}})
    with pytest.raises(UserError, match="runs as one shard"):
        cfg({"rep": {"kind": "report", "num_shards": 2}})
    c = cfg({"ev": {"kind": "eval", "num_shards": 3, "params": {"model": "tiny"}}})
    assert c.stages["ev"].shape == "gpu-array"
