"""Dedup: exact (normalized text) and near (MinHash LSH) duplicates, keeping the first; on real MATH text."""

from __future__ import annotations

from support.hygiene_run import SOURCE, make_run, put_records, run_shard

from skymath.dedup import Deduper, normalize
from skymath.records import Record, read_jsonl, read_records


def test_exact_near_and_distinct(data_root):
    rows = list(read_jsonl(data_root / "math_test.jsonl"))
    long = max(rows[:200], key=lambda r: len(r["problem"]))["problem"]
    other = rows[1]["problem"]
    d = Deduper(threshold=0.8)
    assert d.check("a", long) is None
    assert d.check("b", other) is None
    ex = d.check("c", "  " + long.upper().replace(" ", "\n  ") + " ")
    assert ex is not None and (ex.kind, ex.duplicate_of) == ("exact", "a")
    words = long.split()
    words[-3] = "seventeen"  # a one-word edit near the end
    near = d.check("d", " ".join(words))
    assert near is not None and near.kind == "near" and near.duplicate_of == "a" and 0.8 <= near.jaccard < 1.0
    assert d.check("e", "What is x+y if x=2 and y=3?") is None
    assert d.check("f", "What is x-y if x=2 and y=3?") is None  # an operator change is a new problem
    assert normalize("A  b\nC") == "a b c"


def test_real_math_test_has_no_false_near_duplicates(data_root):
    rows = list(read_jsonl(data_root / "math500_test.jsonl"))
    d = Deduper(threshold=0.9)
    dups = [(r["unique_id"], x) for r in rows if (x := d.check(r["unique_id"], r["problem"]))]
    assert dups == []


def test_dedup_stage(tmp_path):
    recs = [Record(id="r0", problem="Compute 3+4 and then multiply the result by 12, giving the final value."),
            Record(id="r1", problem="compute 3+4   and then multiply the result by 12, giving the final value."),
            Record(id="r2", problem="Compute 3+4 and then multiply the result by 12, giving the final value!"),
            Record(id="r3", problem="Find all primes below 20.")]
    run = make_run(tmp_path, {"synth": SOURCE, "dd": {"kind": "dedup", "depends_on": ["synth"],
                                                      "params": {"threshold": 0.7}}})
    put_records(run, "synth", 0, recs)
    assert run_shard(run, "dd") == 0
    assert [r.id for r in read_records(run.output_files("dd", 1))] == ["r0", "r3"]
    removed = {r.id: r.meta["dedup"] for r in read_records(run.shard_path("dd", 0, ".removed.jsonl"))}
    assert removed["r1"]["kind"] == "exact" and removed["r2"]["kind"] == "near"
    assert removed["r2"]["duplicate_of"] == "r0"
    m = run.read_marker(run.done_path("dd", 0))
    assert (m["records"], m["removed_exact"], m["removed_near"]) == (2, 1, 1)


def test_default_key_keeps_answer_augmentations_problem_key_keeps_one(tmp_path):
    """MetaMath's answer augmentation: one problem, several different solutions. The default key
    (problem + response) keeps them all; key=problem keeps the first; the same sample twice goes."""
    problem = "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May. How many in all?"
    sols = ["In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72.\nThe answer is 72",
            "Half of 48 is 24, so April and May together give 72 clips.\nThe answer is 72",
            "She sold 48 and then 24 more, which sums to seventy-two clips in total.\nThe answer is 72"]
    recs = [Record(id=f"aug{i}", problem=problem, response=s, answer="72", method="metamath")
            for i, s in enumerate(sols)]
    recs.append(Record(id="copy", problem=problem, response=sols[1], answer="72"))  # a true duplicate
    outs = {}
    for key in ("problem_response", "problem"):
        params = {"key": key} if key == "problem" else {}
        run = make_run(tmp_path / key, {"synth": SOURCE, "dd": {"kind": "dedup", "depends_on": ["synth"],
                                                                "params": params}})
        put_records(run, "synth", 0, recs)
        assert run_shard(run, "dd") == 0
        outs[key] = [r.id for r in read_records(run.output_files("dd", 1))]
    assert outs["problem_response"] == ["aug0", "aug1", "aug2"]
    assert outs["problem"] == ["aug0"]


def test_dedup_stage_declares_dedup_so_repeated_ids_are_removed_naming_both(tmp_path):
    recs = [Record(id="r0", problem="Find all primes below 20."),
            Record(id="r1", problem="What is 7 times 8?"),
            Record(id="r0", problem="Find all primes below 30.")]
    run = make_run(tmp_path, {"synth": SOURCE, "dd": {"kind": "dedup", "depends_on": ["synth"]}})
    put_records(run, "synth", 0, recs)
    assert run_shard(run, "dd") == 0
    assert [r.id for r in read_records(run.output_files("dd", 1))] == ["r0", "r1"]
    (gone,) = list(read_records(run.shard_path("dd", 0, ".removed.jsonl")))
    info = gone.meta["dedup"]
    assert info["kind"] == "id" and info["first"].endswith("shard-00000.jsonl:1") and info["this"].endswith(":3")
    assert run.read_marker(run.done_path("dd", 0))["removed_same_id"] == 1
