"""`skymath check` on the REAL local Slurm cluster: one config broken on purpose per class of
problem (cluster resources, scheduler limits, API key, images, inputs, SFT batch, disk), each
caught before anything is queued; `run --executor slurm` refuses with the same table; and the
three paper presets pass with the example profile adapted to the local cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.slurm_helpers import require_cluster

from skymath.config import load_config
from skymath.config.cluster import clusters_dir, load_profile
from skymath.preflight import CheckResult, run_preflight

REPO = Path(__file__).resolve().parent.parent
PAPER = sorted(REPO.glob("launch/skywork-*-7b.yaml"))
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

EMIT = """
run: {name: chk, root: "@ROOT@"}
stages:
  emit:
    kind: support.stage_emit
    num_shards: @N@
    shape: @SHAPE@
    resources: {mem_gb: @MEM@, gpus: @GPUS@, time: "@TIME@"@RES@}
  collect:
    kind: support.stage_collect
    depends_on: [emit]
    resources: {mem_gb: 0.25, time: "00:10:00"}
"""


@pytest.fixture(autouse=True)
def _cluster():
    require_cluster()


def profile_file(tmp_path: Path, base: str = "local", **changes) -> Path:
    data = yaml.safe_load((clusters_dir() / f"{base}.yaml").read_text())
    for k, v in changes.items():
        cur = data
        *head, last = k.split(".")
        for h in head:
            cur = cur.setdefault(h, {})
        cur[last] = v
    p = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def emit_config(tmp_path: Path, n: int = 2, shape: str = "cpu-array", mem: float = 0.25, gpus: int = 0,
                time: str = "00:10:00", res: str = "") -> Path:
    text = EMIT
    for k, v in {"@ROOT@": str(tmp_path / "runs"), "@N@": n, "@SHAPE@": shape, "@MEM@": mem, "@GPUS@": gpus,
                 "@TIME@": time, "@RES@": res}.items():
        text = text.replace(k, str(v))
    p = tmp_path / f"cfg-{len(list(tmp_path.glob('cfg-*')))}.yaml"
    p.write_text(text)
    return p


def check(cfg_path: Path, profile: str | Path = "local", overrides: list[str] | None = None,
          env: dict[str, str] | None = None, ping: bool = False) -> CheckResult:
    cfg = load_config(cfg_path, overrides)
    cfg.run.root = Path(cfg.run.root).resolve()
    cfg.data.root = Path(cfg.data.root).resolve()
    return run_preflight(cfg, load_profile(str(profile)), cfg.run_dir, env=env, ping=ping)


def rows(res: CheckResult, kind: str) -> list[str]:
    return [f"{p.stage} | {p.problem} | {p.fix}" for p in res.problems if p.kind == kind]


def test_a_clean_config_passes_and_every_script_is_accepted_by_sbatch_test_only(tmp_path):
    res = check(emit_config(tmp_path))
    assert res.ok, res.problems
    assert res.jobs == 2 and res.tasks == 3 and res.accepted == 2
    assert not (tmp_path / "runs").exists()  # check wrote nothing


def test_cluster_class_each_rendered_resource_the_cluster_rejects(tmp_path):
    # a missing partition (profile), an unknown account (profile)
    res = check(emit_config(tmp_path), profile_file(tmp_path, **{"partitions.cpu": "cpu-big", "account": "nolab"}))
    text = "\n".join(rows(res, "cluster"))
    assert "partition 'cpu-big' does not exist" in text and "partitions.cpu" in text
    # the partition problem hides the rest of that job; the unknown account shows on a valid partition
    res = check(emit_config(tmp_path), profile_file(tmp_path, account="nolab"))
    text = "\n".join(rows(res, "cluster"))
    assert "account 'nolab' is unknown for user" in text and "mathlab" in text and "root" in text
    # more memory than any node, more GPUs than any node, a time above MaxTime (gpu: 3 days), a
    # constraint that no node of the partition has
    cfg = emit_config(tmp_path, shape="gpu-array", mem=4000, gpus=9, time="4-00:00:00")
    res = check(cfg, profile_file(tmp_path, **{"shapes.gpu-array.time_limit": "5-00:00:00"}))
    text = "\n".join(rows(res, "cluster"))
    assert "asks 4000 GB memory per node; the largest node of partition gpu has 1000 GB" in text
    assert "asks 9 GPUs per node (--gres=gpu:9); nodes of partition gpu have at most 8" in text
    assert "above partition gpu's MaxTime 3-00:00:00" in text
    # the profile's own limit: refused (never silently clamped), and named
    res = check(emit_config(tmp_path, time="3-00:00:00"), profile_file(tmp_path, **{"time_limits.cpu": "1-00:00:00"}))
    assert any("above the profile's time limit 1-00:00:00 (time_limits.cpu)" in r for r in rows(res, "cluster"))
    res = check(emit_config(tmp_path), profile_file(tmp_path, constraint="a100"))
    assert any("--constraint=a100 matches no node of partition cpu" in r for r in rows(res, "cluster"))
    # what our own comparison does not model, sbatch --test-only still catches (its own words)
    res = check(emit_config(tmp_path), profile_file(tmp_path, exclude="no-such-node"))
    assert any("the cluster rejects this job" in r and "sbatch --test-only" in r for r in rows(res, "cluster")), res


def test_limits_class_submit_limit_of_the_qos_and_max_array_size(tmp_path):
    # QOS skymath-small allows 4 queued jobs per user; a 6-shard stage queues 6 array tasks + 1
    res = check(emit_config(tmp_path, n=6), profile_file(tmp_path, qos="skymath-small"))
    text = "\n".join(rows(res, "limits"))
    assert "exceed its MaxSubmitJobsPerUser 4" in text, res
    # a profile max_array_size above the cluster's (1001): task ids the cluster refuses
    res = check(emit_config(tmp_path, n=1500), profile_file(tmp_path, max_array_size=2000))
    assert any("not below the cluster's MaxArraySize 1001" in r for r in rows(res, "limits"))
    # without it the stage is split, which is fine (a note, no problem)
    res = check(emit_config(tmp_path, n=1500))
    assert res.ok, res.problems
    assert any("emit: split into 2 arrays (MaxArraySize 1001)" in n for n in res.notes)


SYNTH = """
run: {name: chk-llm, root: "@ROOT@"}
llm: {model: gpt-4o-mini, api_key_env: SKYMATH_CHECK_TEST_KEY}
stages:
  seeds: {kind: seeds, params: {sources: [math_train], limit: 2}}
  synth: {kind: synth, depends_on: [seeds], num_shards: 2}
"""


def test_secrets_class_api_key_unset_cleanenv_and_ping(tmp_path):
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(SYNTH.replace("@ROOT@", str(tmp_path / "runs")))
    env = {k: v for k, v in os.environ.items() if k != "SKYMATH_CHECK_TEST_KEY"}
    res = check(cfg, env=env)
    assert any(r.startswith("synth |") and "SKYMATH_CHECK_TEST_KEY (llm.api_key_env) is not set" in r
               for r in rows(res, "secrets")), res.problems
    env["SKYMATH_CHECK_TEST_KEY"] = "sk-test-not-a-real-key"
    assert not rows(check(cfg, env=env), "secrets")
    # --export=NONE from the profile: the key never reaches the job
    res = check(cfg, profile_file(tmp_path, sbatch_extra=["--export=NONE"]), env=env)
    assert any("--export=NONE" in r and "SKYMATH_CHECK_TEST_KEY does not reach it" in r for r in rows(res, "secrets"))

    # --ping: one 1-token request per endpoint, its HTTP status, never the key
    from support.fault_server import FaultServer

    with FaultServer() as ok, FaultServer(schedule=["401"]) as denied:
        for srv, want in ((ok, None), (denied, "HTTP 401, the key is refused")):
            res = check(cfg, overrides=[f"llm.endpoints=[{{base_url: '{srv.base_url}'}}]"], env=env, ping=True)
            if want is None:
                assert any(f"--ping {srv.base_url}" in n and "HTTP 200" in n for n in res.notes), res.notes
                assert not rows(res, "secrets")
            else:
                text = "\n".join(rows(res, "secrets"))
                assert want in text and "sk-test-not-a-real-key" not in text
            assert srv.total == 1
    res = check(cfg, overrides=["llm.endpoints=[{base_url: 'http://127.0.0.1:9/v1'}]"], env=env, ping=True)
    assert any("--ping http://127.0.0.1:9/v1: no answer" in r for r in rows(res, "secrets"))


def test_images_class_missing_empty_and_shape_without_image(tmp_path):
    empty = tmp_path / "synth.sif"
    empty.write_bytes(b"")
    prof = profile_file(tmp_path, container={"runtime": "apptainer", "images": {
        "cpu-array": str(empty), "cpu-single": str(tmp_path / "missing.sif")}})
    res = check(emit_config(tmp_path, res=", partition: cpu"), prof,
                overrides=["stages.collect.shape=gpu-array"])
    text = "\n".join(rows(res, "images"))
    assert f"image {empty} (container.images.cpu-array) is empty" in text
    assert "collect | job shape gpu-array has no container image" in text
    res = check(emit_config(tmp_path), prof, overrides=["stages.emit.shape=cpu-single"])
    assert any(f"image {tmp_path / 'missing.sif'} (container.images.cpu-single) does not exist" in r
               for r in rows(res, "images"))
    good = tmp_path / "good.sif"
    good.write_bytes(b"#!/usr/bin/env run-singularity\n")
    res = check(emit_config(tmp_path), profile_file(tmp_path, container={"runtime": "apptainer",
                                                                          "images": {"default": str(good)}}))
    assert not rows(res, "images")


INPUTS = """
run: {name: chk-in, root: "@ROOT@"}
stages:
  seeds: {kind: seeds, params: {sources: [{name: mine, path: "@TMP@/no-seeds.jsonl"}]}}
  decontam: {kind: decontam, depends_on: [seeds], params: {benchmarks: [{name: mybench, path: "@TMP@/no-bench.jsonl"}]}}
  sft: {kind: sft, depends_on: [decontam], params: {model: "@TMP@/no-model-dir", global_batch_size: 4}}
  eval: {kind: eval, params: {model: some-org/some-model-not-cached, benchmarks: [{name: gsm8k, limit: 2}]}}
"""


def test_inputs_class_missing_files_model_dir_and_uncached_hub_repo_offline(tmp_path):
    cfg = tmp_path / "inputs.yaml"
    cfg.write_text(INPUTS.replace("@ROOT@", str(tmp_path / "runs")).replace("@TMP@", str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    hf = tmp_path / "hf"
    res = check(cfg, profile_file(tmp_path, hf_home=str(hf)), env=env)
    text = "\n".join(rows(res, "inputs"))
    assert f"seed source mine: {tmp_path}/no-seeds.jsonl does not exist" in text
    assert f"benchmark mybench: {tmp_path}/no-bench.jsonl does not exist" in text
    assert f"model directory {tmp_path}/no-model-dir does not exist" in text
    assert "some-org/some-model-not-cached" not in text  # online compute nodes fetch it
    offline = profile_file(tmp_path, hf_home=str(hf), env={"HF_HUB_OFFLINE": "1"})
    text = "\n".join(rows(check(cfg, offline, env=env), "inputs"))
    assert f"model some-org/some-model-not-cached is not in the HF cache {hf}" in text
    snap = hf / "hub" / "models--some-org--some-model-not-cached" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    text = "\n".join(rows(check(cfg, offline, env=env), "inputs"))
    assert "some-model-not-cached" not in text and "no-seeds.jsonl" in text


SFT = """
run: {name: chk-sft, root: "@ROOT@"}
stages:
  data: {kind: support.stage_emit, params: {records_per_shard: 4}}
  sft:
    kind: sft
    depends_on: [data]
    resources: {nodes: 1, cpus: 2, mem_gb: 6, time: "01:00:00"}
    params: {model: "tiny:smollm2", global_batch_size: 32, micro_batch_size: 4}
"""


def test_sft_class_global_batch_with_the_ranks_the_job_really_starts(tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(SFT.replace("@ROOT@", str(tmp_path / "runs")))
    # the config-time check sees 1 process (resources.gpus unset) and accepts 32 = 1 x 4 x 8 ...
    assert not rows(check(cfg, profile_file(tmp_path, gpus_per_node=8)), "sft")
    # ... but the template starts the profile's gpus_per_node ranks per node: 3 x 4 does not divide 32
    res = check(cfg, profile_file(tmp_path, gpus_per_node=3))
    text = "\n".join(rows(res, "sft"))
    assert "1 node(s) x 3 ranks per node = 3 processes" in text and "multiple of 12" in text, res.problems


def test_disk_class_unwritable_run_root_and_estimate_above_free_space(tmp_path):
    res = check(emit_config(tmp_path), overrides=["run.root=/proc/skymath-runs"])
    assert any("run directory /proc/skymath-runs/chk cannot be written" in r for r in rows(res, "disk")), res.problems
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(SFT.replace("@ROOT@", str(tmp_path / "runs")))
    # 7B ZeRO-2 checkpoints (~116 GB each, skymath.train.footprint) x 1001 kept: more than any disk here
    res = check(cfg, overrides=["stages.sft.params.model=mistralai/Mistral-7B-v0.1",
                                "stages.sft.params.deepspeed=zero2", "stages.sft.params.bf16=true",
                                "stages.sft.params.keep_checkpoints=1000"])
    text = "\n".join(rows(res, "disk"))
    assert "the run needs ~" in text and "TB" in text and "free" in text, res.problems


def test_run_on_slurm_refuses_with_the_table_and_queues_nothing(tmp_path):
    cfg = emit_config(tmp_path, shape="gpu-array", mem=4000)
    cmd = [sys.executable, "-m", "skymath", "run", str(cfg), "--executor", "slurm", "--profile", "local"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "nothing was submitted" in r.stderr and "asks 4000 GB memory per node" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs" / "chk" / "jobs.jsonl").exists()
    # the same through `skymath check`: exit 2, the same table
    r = subprocess.run([sys.executable, "-m", "skymath", "check", str(cfg), "--profile", "local"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 2 and "asks 4000 GB memory per node" in r.stdout


def example_on_local(tmp_path: Path) -> Path:
    """launch/clusters/example.yaml adapted to the local cluster: its GPU partition is `gpu`, there is
    no Apptainer and no module system here, scratch and HF cache in tmp. Everything else as shipped:
    account mathlab, QOS normal, the a100 constraint on GPU shapes, 8 GPUs per node, 2-day limits."""
    return profile_file(tmp_path, base="example", name="example-local", **{
        "partitions.gpu": "gpu", "container": {"runtime": "none"}, "modules": [], "purge_modules": False,
        "python": sys.executable, "scratch": str(tmp_path / "scratch"), "hf_home": str(tmp_path / "hf")})


@pytest.mark.parametrize("preset", PAPER, ids=[p.stem for p in PAPER])
def test_paper_presets_pass_check_with_the_example_profile_adapted_to_the_local_cluster(tmp_path, preset, monkeypatch):
    import skymath.preflight.disk as disk

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["OPENAI_API_KEY"] = "sk-test-not-a-real-key"
    overrides = [f"run.root={tmp_path / 'runs'}"]
    res = check(preset, example_on_local(tmp_path), overrides, env=env)
    # this machine's disk is far smaller than a 7B run needs (~400 GB of checkpoints): that, and
    # only that, is reported here ...
    assert [p.kind for p in res.problems] == ["disk"], res.problems
    assert "SFT checkpoints" in res.problems[0].problem
    # ... so give the run root the free space of a project file system and nothing is left
    real = disk.shutil.disk_usage
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: real(p)._replace(free=10**15))
    res = check(preset, example_on_local(tmp_path), overrides, env=env)
    assert res.ok, res.problems
    assert res.accepted == res.jobs >= 18 and res.tasks > 1500
    assert any("synth-normal: split into 2 arrays" in n for n in res.notes)
    assert any("sft-1: 8 processes" in n for n in res.notes)


def test_check_cli_passes_the_demo_with_a_short_summary(tmp_path):
    r = subprocess.run([sys.executable, "-m", "skymath", "check", str(REPO / "launch" / "demo.yaml"),
                        "--profile", "local", "-o", f"run.root={tmp_path}"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    import re

    m = re.search(r"OK: (\d+) job\(s\).*sbatch --test-only accepted (\d+)/(\d+)", r.stdout)
    assert m and m.group(1) == m.group(2) == m.group(3) and int(m.group(1)) >= 15, r.stdout
    assert not list(tmp_path.iterdir())



def test_signals_class_synthesis_stop_grace_must_fit_in_the_signal_lead(tmp_path):
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(SYNTH.replace("@ROOT@", str(tmp_path / "runs")))
    env = {**os.environ, "SKYMATH_CHECK_TEST_KEY": "sk-test-not-a-real-key"}
    assert not check(cfg, env=env).problems  # the default 20 s grace fits the local 60 s lead
    res = check(cfg, overrides=["stages.synth.params.stop_grace_s=45"], env=env)
    assert [p.kind for p in res.problems] == ["cluster"]
    assert "stop_grace_s 45 s + 30 s to write and requeue does not fit in the profile's signal_lead_s 60 s" in \
        res.problems[0].problem and "at most 30" in res.problems[0].fix
