"""Shard I/O: atomic finalize, .done last with count + sha256, resume after a torn write, quarantine."""

from __future__ import annotations

import json

from skymath.records import Record, ShardReader, ShardWriter, read_records, sha256_file


def _rec(i: int) -> Record:
    return Record(id=f"r{i}", problem=f"p{i}", answer=str(i))


def test_writer_finalizes_atomically_with_marker(tmp_path):
    out, done = tmp_path / "s.jsonl", tmp_path / "s.done"
    w = ShardWriter(out, done_path=done, flush_every=2)
    for i in range(5):
        assert w.write(_rec(i))
    assert not out.exists() and not done.exists()  # nothing looks finished before close
    assert (tmp_path / "s.jsonl.partial").exists()
    meta = w.close()
    assert out.exists() and not (tmp_path / "s.jsonl.partial").exists()
    marker = json.loads(done.read_text())
    assert marker["records"] == 5 == meta["records"]
    assert marker["sha256"] == sha256_file(out)
    assert [r.id for r in read_records(out)] == [f"r{i}" for i in range(5)]


def test_resume_skips_written_ids_and_drops_torn_line(tmp_path):
    out = tmp_path / "s.jsonl"
    w = ShardWriter(out)
    for i in range(3):
        w.write(_rec(i))
    w.flush()
    # simulate a crash in the middle of writing the 4th line
    with open(tmp_path / "s.jsonl.partial", "a") as f:
        f.write('{"id": "r3", "probl')
    w2 = ShardWriter(out, resume=True)
    assert w2.existing_ids == {"r0", "r1", "r2"}
    for i in range(6):
        w2.write(_rec(i))  # r0..r2 are refused as duplicates
    w2.close()
    ids = [r.id for r in read_records(out)]
    assert ids == [f"r{i}" for i in range(6)]


def test_reader_quarantines_corrupt_lines(tmp_path):
    p = tmp_path / "in.jsonl"
    lines = [_rec(0).to_json(), "{not json", _rec(1).to_json(), json.dumps({"id": "x"}), _rec(2).to_json()]
    p.write_text("\n".join(lines) + "\n")
    reader = ShardReader(p)
    got = [r.id for r in reader]
    assert got == ["r0", "r1", "r2"]
    assert reader.bad == 2
    bad = [json.loads(ln) for ln in (tmp_path / "in.bad.jsonl").read_text().splitlines()]
    assert [b["line"] for b in bad] == [2, 4]
    assert "invalid JSON" in bad[0]["reason"] and "problem" in bad[1]["reason"]
    # reading again rewrites the quarantine instead of doubling it
    list(ShardReader(p))
    assert len((tmp_path / "in.bad.jsonl").read_text().splitlines()) == 2


def test_a_repeated_id_is_an_error_naming_both_lines_resume_skips_are_counted(tmp_path):
    import pytest

    from skymath.records import DuplicateIdError

    out = tmp_path / "s.jsonl"
    w = ShardWriter(out)
    w.write(_rec(0), origin="in.jsonl:7")
    w.write(_rec(1))
    with pytest.raises(DuplicateIdError) as e:
        w.write(_rec(0), origin="in.jsonl:9")
    assert "'r0'" in str(e.value) and "s.jsonl line 1 (from in.jsonl:7)" in str(e.value)
    assert "line 3 (from in.jsonl:9)" in str(e.value)
    w.abort()
    # after a restart, re-offering what the interrupted run wrote is a resume skip, counted ...
    w2 = ShardWriter(out, resume=True)
    assert w2.write(_rec(0)) is False and w2.write(_rec(2)) is True and w2.resumed_skips == 1
    # ... but offering it a second time in the same run is a real duplicate
    with pytest.raises(DuplicateIdError):
        w2.write(_rec(0))
    w2.abort()
    # writers without resume never skip
    w3 = ShardWriter(tmp_path / "t.jsonl")
    w3.write(_rec(5))
    with pytest.raises(DuplicateIdError):
        w3.write(_rec(5))


def test_reading_a_repeated_id_across_shards_names_both_files(tmp_path):
    import pytest

    from skymath.records import DuplicateIdError

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_rec(0).to_json() + "\n" + _rec(1).to_json() + "\n")
    b.write_text(_rec(2).to_json() + "\n" + _rec(1).to_json() + "\n")
    with pytest.raises(DuplicateIdError) as e:
        list(read_records([a, b]))
    assert f"{a}:2 and {b}:2" in str(e.value)
    assert [r.id for r in read_records([a, b], unique=False)] == ["r0", "r1", "r2", "r1"]  # a dedup stage's view


def test_resume_sees_records_holding_unicode_line_separators(tmp_path):
    """GSM8K train holds U+2028 inside solutions; a resumed writer must still see those ids."""
    out = tmp_path / "s.jsonl"
    w = ShardWriter(out)
    w.write(Record(id="sep", problem="first part\u2028second part", answer="1"))
    w.write(_rec(1))
    w.abort()
    w2 = ShardWriter(out, resume=True)
    assert set(w2.existing_ids) == {"sep", "r1"}
    assert w2.write(Record(id="sep", problem="first part\u2028second part", answer="1")) is False
    w2.write(_rec(2))
    w2.close()
    assert [r.id for r in read_records(out)] == ["sep", "r1", "r2"]
