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
