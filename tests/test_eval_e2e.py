"""End to end on CPU with the real tiny model (SmolLM2-135M-Instruct via transformers): a run with
a distractors stage (through the synthesis client against a loopback server), an eval stage on
20 GSM8K + 20 MATH problems (+ the distractor set), and the report stage; a 4-shard eval merges
to exactly the 1-shard result; the report renders from the real results files."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from support.eval_distractor_llm import distractor_responder
from support.eval_run import eval_stage, make_run, run_stage
from support.fault_server import FaultServer

pytestmark = pytest.mark.slow
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("evalrun")
    with FaultServer(responder=distractor_responder) as srv:
        run = make_run(tmp, "demo", {
            "distract": {"kind": "distractors", "num_shards": 2,
                         "params": {"limit": 2, "counts": [1, 3], "sample": "first",
                                    "verify": "rule"}},  # the scripted writer cannot solve (issue 14)
            "ev": {**eval_stage(gsm8k=20, math=20, max_new_tokens=32, batch_size=20, distractors_from="distract",
                                label="smollm2-base"), "depends_on": ["distract"]},
            "report": {"kind": "report", "depends_on": ["ev"]},
        }, llm={"model": "gpt-4o-mini", "endpoints": [{"base_url": srv.base_url}]})
        run_stage(run, "distract")
    run_stage(run, "ev")
    run_stage(run, "report")
    return run


def _results(run, stage="ev"):
    return [json.loads(line) for line in open(run.stage_dir(stage) / "results.jsonl", encoding="utf-8")]


def test_distractor_stage_writes_counted_variants(demo_run) -> None:
    from skymath.records import read_records

    recs = list(read_records(demo_run.output_files("distract", 2)))
    assert sorted((r.parent_id, r.meta["distractors"]) for r in recs) == [
        ("gsm8k/00000", 1), ("gsm8k/00000", 3), ("gsm8k/00001", 1), ("gsm8k/00001", 3)]
    r3 = next(r for r in recs if r.meta["distractors"] == 3 and r.parent_id == "gsm8k/00000")
    assert "Her cousin owns 3 bicycles." in r3.problem and r3.answer == "18"
    assert r3.problem.endswith("How much in dollars does she make every day at the farmers' market?")
    marker = demo_run.read_marker(demo_run.done_path("distract", 0))
    assert marker["usage"]["requests"] == 2 and marker["usage"]["completion_tokens"] > 0


def test_eval_results_and_metrics(demo_run) -> None:
    rows = _results(demo_run)
    assert len(rows) == 44
    assert [r["meta"]["index"] for r in rows] == list(range(44))
    by_bench = {}
    for r in rows:
        by_bench.setdefault(r["meta"]["benchmark"], []).append(r)
    assert {k: len(v) for k, v in by_bench.items()} == {"gsm8k": 20, "math": 20, "gsm8k_distractors": 4}
    for r in rows:
        m = r["meta"]
        assert isinstance(r["response"], str) and m["completion_tokens"] <= 32 and m["prompt_tokens"] > 20
        assert m["correct_lenient"] or not m["correct_strict"]  # lenient includes strict
        assert "### Instruction:" not in r["response"]
    from skymath.evaluate.grade import is_equiv

    for r in rows[:10]:  # verdicts recorded are the grader's verdicts
        m = r["meta"]
        assert m["correct_strict"] == (m["pred_strict"] is not None and is_equiv(m["pred_strict"], r["answer"], m["kind"]))
    for r in rows:  # the paper's protocol is graded beside the symbolic grader, on every item
        assert isinstance(r["meta"]["correct_paper"], bool)
        if r["meta"]["pred_paper"] is None:
            assert not r["meta"]["correct_paper"]
    metrics = json.loads((demo_run.stage_dir("ev") / "metrics.json").read_text())
    assert metrics["label"] == "smollm2-base" and metrics["n"] == 44 and metrics["failed"] == 0
    assert set(metrics["protocols"]) == {"paper", "strict", "lenient"} and metrics["max_length"] == 2048
    math = metrics["benchmarks"]["math"]
    assert math["overall"]["n"] == 20 and sum(v["n"] for v in math["by_level"].values()) == 20
    assert len(math["by_subject"]) == 7
    assert set(metrics["by_distractors"]) == {"0", "1", "3"} and metrics["by_distractors"]["0"]["n"] == 20
    marker = demo_run.read_marker(demo_run.done_path("ev", 0))
    assert marker["records"] == 44 and marker["completion_tokens"] > 0


def test_report_stage_renders_tables_plots_and_run_summary(demo_run) -> None:
    out = demo_run.root / "report"
    md = (out / "report.md").read_text()
    for heading in ("Accuracy (%): the paper's protocol beside the symbolic grader", "MATH accuracy (%) by level",
                    "MATH accuracy (%) by subject", "vs number of distractor sentences", "Run summary"):
        assert heading in md
    assert "**paper** = the paper's protocol, reproduced exactly: MetaMath's evaluation" in md
    assert "Strict = the paper's protocol" not in md  # the symbolic grader is no longer called the paper's
    for png in ("math_by_level.png", "math_by_subject.png", "distractors.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "run_summary.csv", newline="") as f:
        summary = {row["stage"]: row for row in csv.DictReader(f)}
    assert summary["distract"]["records"] == "4" and summary["ev"]["records"] == "44"
    assert int(summary["distract"]["API requests"]) == 4 and float(summary["distract"]["API cost USD"]) > 0
    # the hf eval generated locally: tokens, no API spend, priced only at the reference model
    assert summary["ev"]["API requests"] == "0" and float(summary["ev"]["API cost USD"]) == 0
    assert int(summary["ev"]["local completion tokens"]) > 0 and float(summary["ev"]["reference cost USD"]) > 0
    assert summary["ev"]["failed"] == "0"
    assert float(summary["total"]["reference cost USD"]) > 0
    assert str(demo_run.stage_dir("ev") / "results.jsonl") in md
    with open(out / "overall.csv", newline="") as f:
        overall = list(csv.DictReader(f))
    assert overall[0]["model"] == "smollm2-base" and overall[0]["math symbolic n"] == "20"
    assert overall[0]["math paper n"] == "20" and overall[0]["math failed"] == "0"
    metrics = json.loads((demo_run.stage_dir("ev") / "metrics.json").read_text())
    for proto in ("paper", "symbolic"):
        key = "paper" if proto == "paper" else "strict"
        assert float(overall[0][f"gsm8k {proto}"]) == metrics["benchmarks"]["gsm8k"]["overall"][key]
    with open(out / "math_by_level.csv", newline="") as f:
        assert [r["protocol"] for r in csv.DictReader(f)] == ["paper", "symbolic"]


def test_report_command_with_a_scaling_comparison(demo_run, tmp_path, capsys) -> None:
    """A second run made of the same real results, labelled with another SFT sample count: the
    report gets a scaling table and a log-x scaling plot."""
    from skymath.cli import main
    from skymath.stages.evaluate import merge

    runs = []
    for n in (1000, 30000):
        other = make_run(tmp_path, f"n{n}", {"ev": eval_stage(gsm8k=20, math=20, max_new_tokens=24, batch_size=20,
                                                              sft_samples=n)})
        other.stage_dir("ev").mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_run.shard_path("ev", 0), other.shard_path("ev", 0))
        other.mark_done("ev", 0, {"records": 44})
        merge(other, other.load_config(), "ev")
        runs.append(other)
    assert main(["report", str(runs[0].root), "--compare", str(runs[1].root)]) == 0
    out = capsys.readouterr().out
    assert "Accuracy (%) vs number of SFT samples" in out
    rep = runs[0].root / "report"
    assert (rep / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    with open(rep / "scaling.csv", newline="") as f:
        assert [r["SFT samples"] for r in csv.DictReader(f)] == ["1000", "30000"]


def test_four_shards_merge_to_the_one_shard_result(tmp_path, tiny_model) -> None:
    stage = eval_stage(gsm8k=4, math=4, max_new_tokens=8, batch_size=1)
    one = make_run(tmp_path, "one", {"ev": stage})
    four = make_run(tmp_path, "four", {"ev": {**stage, "num_shards": 4}})
    run_stage(one, "ev")
    run_stage(four, "ev")
    for s in range(4):
        assert len(Path(four.shard_path("ev", s)).read_text().splitlines()) == 2
    assert (four.stage_dir("ev") / "results.jsonl").read_bytes() == (one.stage_dir("ev") / "results.jsonl").read_bytes()
    m1 = json.loads((one.stage_dir("ev") / "metrics.json").read_text())
    m4 = json.loads((four.stage_dir("ev") / "metrics.json").read_text())
    assert m1 == m4
