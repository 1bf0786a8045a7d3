"""Decontamination on the real benchmark data, through the library, the command and the stage."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
from support.hygiene_run import SOURCE, make_run, put_records, run_shard

from skymath.cli import main as cli_main
from skymath.decontam import Decontaminator, load_benchmark, reference_contaminated
from skymath.errors import UserError
from skymath.records import Record, read_jsonl, read_records

CLAUSE_PROBLEM = ("Let $x$ and $y$ be nonzero real numbers such that $x+y=7$ and $xy=3$. "
                  "Compute $\\frac{1}{x}+\\frac{1}{y}$.")


@cache
def _rows(root: Path, name: str) -> list[dict]:
    return list(read_jsonl(root / name))


def _ws_30gram_problems(train: list[dict], test: list[dict]) -> set[str]:
    """The data README's count: train problems sharing a 30-token whitespace n-gram with a test problem."""
    def grams(text: str) -> set[tuple[str, ...]]:
        t = text.split()
        return {tuple(t[i:i + 30]) for i in range(len(t) - 29)}
    test_grams: set[tuple[str, ...]] = set()
    for r in test:
        test_grams |= grams(r["problem"])
    return {r["unique_id"] for r in train if grams(r["problem"]) & test_grams}


def test_math_train_vs_math_test_finds_the_known_cases(data_root):
    train = _rows(data_root, "math_train.jsonl.gz")
    items = load_benchmark("math", data_root)
    dec = Decontaminator(items, n=30)
    matches = dec.check([r["problem"] for r in train], [r["solution"] for r in train])
    removed = {r["unique_id"]: m for r, m in zip(train, matches, strict=True) if m is not None}
    # the one train problem equal to a test problem up to whitespace
    m = removed["train/geometry/6032.json"]
    assert (m.rule, m.test_id) == ("exact_problem", "math:test/precalculus/24307.json")
    # the ~90 train problems sharing a 30-token sequence with test problems (data README): a span of 30
    # whitespace tokens holds 30 \w+ words unless it is mostly LaTeX punctuation, so nearly all are caught
    ws = _ws_30gram_problems(train, _rows(data_root, "math_test.jsonl"))
    assert len(ws) == 90
    assert len(ws & removed.keys()) >= 85
    # every reported n-gram really is 30 words of the test item it names
    by_id = {it.test_id: it for it in items}
    for m in removed.values():
        if m.rule == "ngram":
            it = by_id[m.test_id]
            words = m.ngram.split()
            assert len(words) == 30
            text = " ".join(re.findall(r"\w+", (it.solution if m.test_field == "solution" else it.problem).lower()))
            assert m.ngram in text
    # and the split is exactly the plain definition's
    ref = reference_contaminated([(r["problem"], r["solution"]) for r in train], items, 30)
    assert ref == [x is not None for x in matches]
    assert 150 < len(removed) < 600


def test_gsm8k_train_vs_gsm8k_test_finds_nothing(data_root):
    train = _rows(data_root, "gsm8k_train.jsonl")
    dec = Decontaminator(load_benchmark("gsm8k", data_root), n=30)
    assert not any(dec.check([r["question"] for r in train], [r["answer"] for r in train]))


def test_n10_removes_the_common_clause_and_n30_does_not(data_root):
    items = load_benchmark("math", data_root) + load_benchmark("gsm8k", data_root)
    sample = ([CLAUSE_PROBLEM], ["1/x + 1/y = (x+y)/(xy) = 7/3.\nThe answer is 7/3"])
    m10 = Decontaminator(items, n=10).check(*sample)[0]
    assert m10 is not None and m10.ngram == "let x and y be nonzero real numbers such that"
    assert Decontaminator(items, n=30).check(*sample)[0] is None


def test_command_catches_all_agieval_math_problems(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(["decontam", "--n", "30", "--benchmark", "gsm8k", "--benchmark", "math",
                   str(data_root / "agieval_math.jsonl"), "--out", str(out)])
    assert rc == 0
    removed = list(read_jsonl(out / "removed.jsonl"))
    kept = list(read_jsonl(out / "kept.jsonl"))
    assert len(removed) == 1000 and {r["source"] for r in removed} == {"agieval:math"}
    assert "agieval:math" not in {r["source"] for r in kept} and len(kept) == 943
    assert all(r["decontam"]["benchmark"] == "math" and r["decontam"]["test_id"].startswith("math:test/")
               for r in removed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["removed"] == 1000 and summary["removed_by_benchmark"] == {"math": 1000}
    assert "removed 1000" in capsys.readouterr().out


def test_command_bad_input_is_one_line_error(tmp_path, capsys):
    rc = cli_main(["decontam", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "nope.jsonl: input file not found" in capsys.readouterr().err
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"problem": "x"}\n')
    rc = cli_main(["decontam", "--benchmark", "mathx", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2 and "unknown benchmark 'mathx'" in capsys.readouterr().err


def _rec(i: int, problem: str, response: str | None = None) -> Record:
    return Record(id=f"s{i}", problem=problem, response=response, source="synth", level=3)


def test_stage_splits_kept_and_removed_with_reasons_and_caches_the_index(data_root, tmp_path):
    test = _rows(data_root, "math_test.jsonl")
    gsm = _rows(data_root, "gsm8k_test.jsonl")
    shards = [
        [_rec(0, test[0]["problem"]), _rec(1, "What is 2+3?", "5"), _rec(2, CLAUSE_PROBLEM)],
        [_rec(3, "Solve it.", "We see " + gsm[5]["answer"]), _rec(4, "Compute 7*8.", "56")],
    ]
    run = make_run(tmp_path, {"synth": {**SOURCE, "num_shards": 2},
                              "decon": {"kind": "decontam", "depends_on": ["synth"], "num_shards": 2,
                                        "params": {"n": 30, "benchmarks": ["gsm8k", "math"]}}})
    for i, recs in enumerate(shards):
        put_records(run, "synth", i, recs)
    assert run_shard(run, "decon", 0) == 0
    cache_files = list((run.root / "cache" / "decontam").glob("*.npz"))
    assert len(cache_files) == 1
    mtime = cache_files[0].stat().st_mtime_ns
    assert run_shard(run, "decon", 1) == 0
    assert cache_files[0].stat().st_mtime_ns == mtime  # built once, then loaded
    kept = [r.id for r in read_records(run.output_files("decon", 2))]
    assert kept == ["s1", "s2", "s4"]
    removed = {r.id: r.meta["decontam"] for i in range(2)
               for r in read_records(run.shard_path("decon", i, ".removed.jsonl"))}
    assert removed["s0"]["rule"] == "exact_problem" and removed["s0"]["test_id"] == "math:" + test[0]["unique_id"]
    assert removed["s3"]["benchmark"] == "gsm8k" and removed["s3"]["test_id"] == "gsm8k:5"
    assert len(removed["s3"]["ngram"].split()) == 30 and removed["s3"]["field"] == "response"
    m0 = run.read_marker(run.done_path("decon", 0))
    assert (m0["records"], m0["kept"], m0["removed"], m0["input"]) == (2, 2, 1, 3)
    summary = json.loads((run.stage_dir("decon") / "summary.json").read_text())
    assert summary["input"] == 5 and summary["removed"] == 2
    assert summary["removed_by_benchmark"] == {"math": 1, "gsm8k": 1}


def test_stage_config_is_checked(tmp_path):
    with pytest.raises(UserError, match="unknown benchmark 'gsm9k'"):
        make_run(tmp_path, {"synth": SOURCE, "d": {"kind": "decontam", "depends_on": ["synth"],
                                                  "params": {"benchmarks": ["gsm9k"]}}})
    with pytest.raises(UserError, match="needs an input stage"):
        make_run(tmp_path, {"d": {"kind": "decontam"}})
    with pytest.raises(UserError, match="params"):
        make_run(tmp_path, {"synth": SOURCE, "d": {"kind": "decontam", "depends_on": ["synth"],
                                                  "params": {"n": 0}}})
