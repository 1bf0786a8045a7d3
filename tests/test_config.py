"""Config errors: one line naming file, line, key path and problem; exit code 2; no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import write_config

from skymath.config import load_config
from skymath.errors import UserError

GOOD = """\
run: {name: cfgtest, root: RUNS}
stages:
  seeds:
    kind: seeds
    num_shards: 2
    params: {levels: [4, 5], limit: 10}
  more:
    kind: support.stage_collect
    depends_on: [seeds]
"""


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skymath", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_good_config_and_overrides(tmp_path):
    p = write_config(tmp_path, GOOD.replace("RUNS", str(tmp_path / "runs")))
    cfg = load_config(p, ["stages.seeds.num_shards=64", "stages.seeds.params.limit=3", "llm.model=gpt-4o"])
    assert cfg.stages["seeds"].num_shards == 64
    assert cfg.stages["seeds"].params.limit == 3
    assert cfg.stages["seeds"].params.levels == [4, 5]
    assert cfg.llm.model == "gpt-4o"
    assert cfg.stages["seeds"].shape == "cpu-array"  # the kind's default shape


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (GOOD.replace("num_shards: 2", "num_shard: 2"), [], ["cfg.yaml:5:", "stages.seeds.num_shard", "unknown key", "did you mean 'num_shards'"]),
        (GOOD.replace("limit: 10", "limt: 10"), [], ["cfg.yaml:6:", "stages.seeds.params.limt", "did you mean 'limit'"]),
        (GOOD.replace("num_shards: 2", "num_shards: many"), [], ["cfg.yaml:5:", "stages.seeds.num_shards", "integer", "'many'"]),
        (GOOD.replace("kind: seeds", "kind: sedes"), [], ["stages.seeds.kind", "unknown stage kind 'sedes'", "did you mean 'seeds'"]),
        (GOOD.replace("depends_on: [seeds]", "depends_on: [seedz]"), [], ["depends on unknown stage 'seedz'", "did you mean 'seeds'"]),
        (GOOD + "    stages: {}\n", [], ["unknown key"]),
        (GOOD.replace("  seeds:\n    kind: seeds\n", "  seeds:\n    kind: seeds\n    depends_on: [more]\n"), [],
         ["dependency cycle", "more -> seeds -> more"]),
        (GOOD, ["stages.seeds.num_shards=zero"], ["stages.seeds.num_shards"]),
        (GOOD, ["runn.name=x"], ["runn", "unknown key", "did you mean 'run'"]),
        (GOOD.replace("num_shards: 2", "num_shards: 2: 3"), [], ["cfg.yaml:5:", "malformed YAML", "mapping values"]),
        (GOOD.replace("    num_shards: 2\n", "    num_shards: 2\n   bad_indent: 1\n"), [], ["cfg.yaml:", "malformed YAML"]),
    ],
)
def test_config_errors_name_file_line_key(tmp_path, text, overrides, expected):
    p = write_config(tmp_path, text.replace("RUNS", str(tmp_path / "runs")))
    with pytest.raises(UserError) as ei:
        load_config(p, overrides)
    msg = str(ei.value)
    assert "\n" not in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_missing_file_and_cli_exit_code(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = write_config(tmp_path, GOOD.replace("num_shards: 2", "num_shard: 2"))
    for args in (["plan", str(bad)], ["plan", str(tmp_path / "nope.yaml")], ["run", str(bad)],
                 ["plan", str(write_config(tmp_path, "stages: [", "broken.yaml"))]):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.startswith("skymath: error: ") and r.stderr.count("\n") == 1, r.stderr


def test_cli_help_and_version_do_not_import_heavy_modules():
    code = ("import sys, skymath.cli as c; p = c.build_parser(); "
            "heavy = [m for m in ('torch', 'transformers', 'deepspeed', 'vllm', 'datasets', 'sentence_transformers', "
            "'openai', 'matplotlib') if m in sys.modules]; print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    v = _cli("--version")
    assert v.returncode == 0 and v.stdout.startswith("skymath ")
