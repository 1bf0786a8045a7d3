"""The `seeds` stage on the real MATH train file and the other seed sets."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import write_config

from skymath.data.seeds import load_seeds
from skymath.errors import UserError
from skymath.executors.local import LocalExecutor
from skymath.pipeline.runner import prepare_run
from skymath.records import read_records
from skymath.worker import run_shard

ALL_SOURCES = ["math_train", "olympiadbench", "agieval", "scibench", "jeebench"]


def test_math_train_counts_and_level_filter(data_root, tmp_path):
    cache = tmp_path / "hf"
    all_math = load_seeds(["math_train"], data_root, cache_dir=cache)
    assert len(all_math) == 7500
    assert len({r.id for r in all_math}) == 7500
    hard = load_seeds(["math_train"], data_root, levels=[4, 5], cache_dir=cache)
    assert len(hard) == 3994
    assert Counter(r.level for r in hard) == {4: 1690, 5: 2304}
    r0 = all_math[0]
    assert r0.source == "math_train" and r0.subject == "Algebra" and r0.answer and r0.response
    assert r0.id.startswith("math_train:train/algebra/")


def test_other_seed_sets_normalize(data_root, tmp_path):
    recs = load_seeds(["olympiadbench", "agieval", "scibench", "jeebench"], data_root, cache_dir=tmp_path / "hf")
    by = Counter(r.id.split(":")[0] for r in recs)
    assert by == {"olympiadbench": 675, "agieval": 943, "scibench": 199, "jeebench": 236}
    # AGIEval's `math` section is MATH test: never a seed
    assert not any(r.source == "agieval:math" for r in recs)
    assert all(r.problem and r.answer is not None for r in recs)


def test_seeds_stage_shards_are_a_deterministic_partition(data_root, tmp_path):
    cfg_text = f"""
run: {{name: seeds, root: {tmp_path / 'runs'}}}
stages:
  seeds: {{kind: seeds, num_shards: 3, params: {{levels: [4, 5]}}}}
"""
    run, cfg = prepare_run(write_config(tmp_path, cfg_text))
    assert LocalExecutor(run, cfg, quiet=True).launch() == 0
    per_shard = [[r.id for r in read_records(run.shard_path("seeds", i))] for i in range(3)]
    assert sum(map(len, per_shard)) == 3994
    assert len(set().union(*map(set, per_shard))) == 3994
    expected = [r.id for r in load_seeds(["math_train"], data_root, levels=[4, 5], cache_dir=tmp_path / "hf")]
    assert per_shard[0] + per_shard[1] + per_shard[2] == expected


def test_all_sources_write_9553_unique_records(tmp_path):
    """Counted from the files the stage wrote: a seed dropped anywhere (id collisions across AGIEval
    sections, JEEBench papers, SciBench splits) changes a per-source count and fails this test."""
    cfg_text = f"""
run: {{name: allseeds, root: {tmp_path / 'runs'}}}
stages:
  seeds: {{kind: seeds, num_shards: 3, params: {{sources: {ALL_SOURCES}}}}}
"""
    run, cfg = prepare_run(write_config(tmp_path, cfg_text))
    for i in range(3):
        assert run_shard(run.root, "seeds", i) == 0
    written = [json.loads(line) for i in range(3)
               for line in run.shard_path("seeds", i).read_text(encoding="utf-8").splitlines()]
    ids = [r["id"] for r in written]
    assert len(ids) == len(set(ids)) == 9553
    assert Counter(i.split(":", 1)[0] for i in ids) == {"math_train": 7500, "olympiadbench": 675, "agieval": 943,
                                                          "scibench": 199, "jeebench": 236}
    by_section = Counter(r["source"] for r in written if r["id"].startswith("agieval:"))
    assert by_section == {"agieval:sat-math": 220, "agieval:aqua-rat": 254, "agieval:gaokao-mathqa": 351,
                          "agieval:gaokao-mathcloze": 118}
    # the markers and the summary count what was written, shard by shard
    markers = [run.read_marker(run.done_path("seeds", i)) for i in range(3)]
    assert sum(m["records"] for m in markers) == 9553
    assert sum(sum(m["written_by_source"].values()) for m in markers) == 9553
    summary = json.loads((run.stage_dir("seeds") / "summary.json").read_text())
    assert summary["written"] == summary["selected"] == 9553 and summary["complete"]
    assert summary["written_by_source"]["jeebench"] == 236


def test_a_repeated_id_is_an_error_naming_both_rows(tmp_path):
    rows = [{"problem": "What is 1+1?", "answer": "2", "qid": "a"},
            {"problem": "What is 2+2?", "answer": "4", "qid": "b"},
            {"problem": "What is 3+3?", "answer": "6", "qid": "a"}]
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = {"name": "mine", "path": str(f), "fields": {"id": "qid", "level": None, "subject": None, "source": None}}
    from skymath.data.seeds import SourceSpec

    with pytest.raises(UserError) as e:
        load_seeds([SourceSpec.model_validate(src)], tmp_path)
    assert f"{f}:1 and {f}:3" in str(e.value) and "'mine:a'" in str(e.value)
    # through the stage: exit 2, the .failed marker names both rows, nothing is marked done
    cfg_text = f"""
run: {{name: dup, root: {tmp_path / 'runs'}}}
stages:
  seeds: {{kind: seeds, params: {{sources: [{json.dumps(src)}]}}}}
"""
    run, _ = prepare_run(write_config(tmp_path, cfg_text))
    assert run_shard(run.root, "seeds", 0) == 2
    assert not run.is_done("seeds", 0)
    assert f"{f}:1 and {f}:3" in run.read_marker(run.failed_path("seeds", 0))["error"]
    # numbering the repeats is an explicit choice of the source
    src2 = SourceSpec.model_validate({**src, "on_duplicate_id": "number"})
    assert [r.id for r in load_seeds([src2], tmp_path)] == ["mine:a", "mine:b", "mine:a~2"]
