"""Hard-problem selection (LLM judge through the real client and a loopback server, heuristic,
random of the same size) and the verifier filter with its difficulty report."""

from __future__ import annotations

import json

import pytest
from support.hygiene_judge import judge_server, llm_config
from support.hygiene_run import SOURCE, make_run, put_records, run_shard

from skymath.errors import UserError
from skymath.records import Record, read_records
from skymath.select.judge import hardness_prompt, parse_rating, parse_verdict, verifier_prompt


def test_parsing_is_robust():
    assert parse_rating("blah\nDifficulty: 3\n...\nDifficulty: 8") == (8.0, None)
    assert parse_rating("**Difficulty:** 6") == (6.0, None)
    assert parse_rating("difficulty rating = 7.5")[0] == 7.5
    assert parse_rating("Difficulty: 42")[1] == "difficulty 42 outside 1..10"
    assert parse_rating(None)[1] == "empty answer"
    assert parse_rating("hard, I think")[0] is None
    assert parse_verdict("steps...\nVerdict: incorrect") == (False, None)
    assert parse_verdict("Verdict: **correct**") == (True, None)
    assert parse_verdict("looks fine")[0] is None


def test_prompts_render_the_record():
    p = verifier_prompt("Find x.", "x = 2. The answer is 2", gold="2")
    assert "Find x." in p and "The answer is 2" in p and "known correct final answer is: 2" in p
    assert "known correct" not in verifier_prompt("Find x.", "x = 2", gold=None)
    h = hardness_prompt("Find x.", None)
    assert "Find x." in h and "reference solution" not in h and h.rstrip().endswith("10 (extremely hard).")


def _recs() -> list[Record]:
    spec = [(7, 5, 120), (2, 1, 20), ("none", 4, 80), (9, 5, 60), (5, 3, 200), (8, 2, 40)]
    return [Record(id=f"h{i}", problem=f"Problem {i} [rate={r}]: find x.", response=" ".join(["w"] * n),
                   level=lv, source="synth") for i, (r, lv, n) in enumerate(spec)]


def test_judge_selects_by_rating_and_records_failures(tmp_path):
    with judge_server(schedule=["500"]) as srv:  # the first request fails once: the client retries
        run = make_run(tmp_path, {"synth": {**SOURCE, "num_shards": 2},
                                  "hard": {"kind": "hardness", "depends_on": ["synth"], "num_shards": 2,
                                           "params": {"method": "judge", "min_rating": 7}}}, llm_config(srv))
        recs = _recs()
        put_records(run, "synth", 0, recs[:3])
        put_records(run, "synth", 1, recs[3:])
        assert run_shard(run, "hard", 0) == 0 and run_shard(run, "hard", 1) == 0
        assert srv.by_action["500"] == 1
    kept = list(read_records(run.output_files("hard", 2)))
    assert [(r.id, r.meta["hardness"]["rating"]) for r in kept] == [("h0", 7.0), ("h3", 9.0), ("h5", 8.0)]
    failed = list(read_records(run.shard_path("hard", 0, ".judge_failed.jsonl")))
    assert [r.id for r in failed] == ["h2"]
    assert "no 'Difficulty: N' line" in failed[0].meta["hardness"]["error"]
    m0 = run.read_marker(run.done_path("hard", 0))
    assert (m0["records"], m0["rated"], m0["judge_failed"]) == (1, 2, 1)


def test_heuristic_and_random_of_the_same_size(tmp_path):
    run = make_run(tmp_path, {
        "synth": {**SOURCE, "num_shards": 2},
        "hard": {**SOURCE},  # stands for a judge selection of 3 records
        "heur": {"kind": "hardness", "depends_on": ["synth"], "num_shards": 2,
                 "params": {"method": "heuristic", "k": 3}},
        "rand": {"kind": "hardness", "depends_on": ["synth", "hard"], "num_shards": 2,
                 "params": {"method": "random", "same_size_as": "hard", "seed": 4}},
    })
    recs = _recs()
    put_records(run, "synth", 0, recs[:3])
    put_records(run, "synth", 1, recs[3:])
    put_records(run, "hard", 0, recs[:3])
    for stage in ("heur", "rand"):
        assert run_shard(run, stage, 0) == 0 and run_shard(run, stage, 1) == 0
    heur = [r.id for r in read_records(run.output_files("heur", 2))]
    assert heur == ["h0", "h2", "h3"]  # levels 5, 4, 5 (level 5 with the longer solution first)
    rand = [r.id for r in read_records(run.output_files("rand", 2))]
    assert len(rand) == 3 and len(set(rand)) == 3 and set(rand) <= {r.id for r in recs}
    # the same seed gives the same choice, wherever the shards run
    for i in range(2):
        run.done_path("rand", i).unlink()
        assert run_shard(run, "rand", i) == 0
    assert [r.id for r in read_records(run.output_files("rand", 2))] == rand


def test_hardness_config_is_checked(tmp_path):
    with pytest.raises(UserError, match="exactly one of min_rating and fraction"):
        make_run(tmp_path, {"s": SOURCE, "h": {"kind": "hardness", "depends_on": ["s"]}})
    with pytest.raises(UserError, match="must be in depends_on"):
        make_run(tmp_path, {"s": SOURCE, "h": {"kind": "hardness", "depends_on": ["s"],
                                                "params": {"method": "random", "same_size_as": "x"}}})


def test_verifier_keeps_correct_and_reports_difficulty_shift(tmp_path):
    spec = [("correct", 1, "2"), ("incorrect", 5, None), ("correct", 2, None), ("none", 4, "7"),
            ("incorrect", 5, "1"), ("correct", 5, None)]
    recs = [Record(id=f"v{i}", problem=f"Problem {i} [verdict={v}]", response="x = 2. The answer is 2",
                   answer=a, level=lv, source="synth") for i, (v, lv, a) in enumerate(spec)]
    with judge_server() as srv:
        run = make_run(tmp_path, {"synth": SOURCE,
                                  "ver": {"kind": "verifier", "depends_on": ["synth"]}}, llm_config(srv))
        put_records(run, "synth", 0, recs)
        assert run_shard(run, "ver", 0) == 0
        assert srv.by_action["ok"] == 6
    kept = [r.id for r in read_records(run.output_files("ver", 1))]
    assert kept == ["v0", "v2", "v5"]
    rejected = {r.id: r.meta["verifier"] for r in read_records(run.shard_path("ver", 0, ".rejected.jsonl"))}
    assert rejected["v1"]["correct"] is False and "Verdict" in rejected["v3"]["error"]
    summary = json.loads((run.stage_dir("ver") / "summary.json").read_text())
    assert summary["input"] == 6 and summary["kept"] == 3 and summary["judge_errors"] == 1
    assert summary["before"]["levels"] == {"1": 1, "2": 1, "4": 1, "5": 3}
    assert summary["after"]["levels"] == {"1": 1, "2": 1, "5": 1}


def test_failed_judge_requests_are_never_verdicts_and_rerun_retries_only_them(tmp_path):
    """A judge request failing permanently fails its shard (no `.done`, one line with the count);
    once the server recovers, the rerun sends only that request again and selects exactly what a
    run that never failed selects."""
    from support.fault_server import Rule

    with judge_server(rules=[Rule("[rate=9]", ["500"], repeat_last=True)]) as srv:
        run = make_run(tmp_path, {"synth": {**SOURCE, "num_shards": 2},
                                  "hard": {"kind": "hardness", "depends_on": ["synth"], "num_shards": 2,
                                           "params": {"method": "judge", "min_rating": 7}}}, llm_config(srv))
        recs = _recs()
        put_records(run, "synth", 0, recs[:3])
        put_records(run, "synth", 1, recs[3:])
        assert run_shard(run, "hard", 0) == 0
        assert run_shard(run, "hard", 1) == 1
        err = run.read_marker(run.failed_path("hard", 1))["error"]
        assert "1 of 3 judge requests failed (first: request failed after 4 attempt(s): HTTP 500" in err
        assert not run.is_done("hard", 1) and "\n" not in err
        assert [json.loads(x)["id"] for x in run.shard_path("hard", 1, ".failures.jsonl").read_text().splitlines()] == ["h3"]
        ok_before = sum(srv.ok_bodies.values())
        srv.rules = []  # the server recovers
        assert run_shard(run, "hard", 1) == 0
        assert sum(srv.ok_bodies.values()) == ok_before + 1  # only h3 was sent again
        assert all(v == 1 for v in srv.ok_bodies.values())
    kept = list(read_records(run.output_files("hard", 2)))
    assert [(r.id, r.meta["hardness"]["rating"]) for r in kept] == [("h0", 7.0), ("h3", 9.0), ("h5", 8.0)]
    assert [r.id for r in read_records(run.shard_path("hard", 1, ".judge_failed.jsonl"))] == []
    assert run.read_marker(run.done_path("hard", 1))["failed"] == 0


def test_failed_verifier_request_is_neither_kept_nor_rejected(tmp_path):
    from support.fault_server import Rule

    recs = [Record(id=f"v{i}", problem=f"Problem {i} [verdict={v}]", response="The answer is 2", answer="2",
                   level=lv, source="synth") for i, (v, lv) in enumerate([("correct", 1), ("incorrect", 5),
                                                                          ("correct", 3)])]
    with judge_server(rules=[Rule("Problem 1 [verdict", ["500"], repeat_last=True)]) as srv:
        run = make_run(tmp_path, {"synth": SOURCE, "ver": {"kind": "verifier", "depends_on": ["synth"],
                                                           "params": {"on_judge_error": "keep"}}}, llm_config(srv))
        put_records(run, "synth", 0, recs)
        assert run_shard(run, "ver", 0) == 1
        assert "1 of 3 verifier requests failed" in run.read_marker(run.failed_path("ver", 0))["error"]
        assert not (run.stage_dir("ver") / "summary.json").exists()
        srv.rules = []
        assert run_shard(run, "ver", 0) == 0
    assert [r.id for r in read_records(run.output_files("ver", 1))] == ["v0", "v2"]
    assert [r.id for r in read_records(run.shard_path("ver", 0, ".rejected.jsonl"))] == ["v1"]
    summary = json.loads((run.stage_dir("ver") / "summary.json").read_text())
    assert (summary["input"], summary["kept"], summary["rejected"], summary["failed"]) == (3, 2, 1, 0)


def test_tolerated_judge_failure_is_counted_not_selected(tmp_path):
    from support.fault_server import Rule

    with judge_server(rules=[Rule("[rate=7]", ["500"], repeat_last=True)]) as srv:
        run = make_run(tmp_path, {"synth": SOURCE,
                                  "hard": {"kind": "hardness", "depends_on": ["synth"],
                                           "params": {"method": "judge", "min_rating": 7, "failure_tolerance": 0.2}}},
                       llm_config(srv))
        put_records(run, "synth", 0, _recs())
        assert run_shard(run, "hard", 0) == 0
    kept = [r.id for r in read_records(run.output_files("hard", 1))]
    assert kept == ["h3", "h5"]  # h0 (rated 7) had no answer: neither selected nor "not hard"
    m = run.read_marker(run.done_path("hard", 0))
    assert (m["failed"], m["rated"], m["judge_failed"]) == (1, 4, 1)
