"""The `seeds` stage on the real MATH train file and the other seed sets."""

from __future__ import annotations

from collections import Counter

from conftest import write_config

from skymath.data.seeds import load_seeds
from skymath.executors.local import LocalExecutor
from skymath.pipeline.runner import prepare_run
from skymath.records import read_records


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
