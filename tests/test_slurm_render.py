"""Rendered sbatch scripts: every template x shape x profile passes `bash -n`; hostile values
render inert (also when the script is actually executed); secrets never reach a script or the
ledger; profiles validate with one-line errors; array splitting and index helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from support.slurm_helpers import job_ids, make_executor, require_cluster, wait_jobs

from skymath.config.cluster import ClusterProfile, load_profile, profile_names
from skymath.config.schema import SHAPES, StageSpec
from skymath.errors import UserError
from skymath.executors.render import check_time, job_spec, render_script, render_stop_job, shell_vars
from skymath.executors.slurm import compress_indices, expand_indices, split_array

EVIL = ["x$(touch {p})", "a; touch {p}", "`touch {p}`", "'; touch {p}; '", 'q"$(touch {p})"', "b\\ touch {p}&"]


def bash_n(text: str, tmp_path: Path) -> None:
    f = tmp_path / f"s-{uuid.uuid4().hex}.sh"
    f.write_text(text)
    r = subprocess.run(["bash", "-n", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + text


def test_every_template_renders_for_every_shape_and_profile(tmp_path):
    assert {"local", "example"} <= set(profile_names())
    for name in profile_names():
        prof = load_profile(name)
        for shape in SHAPES:
            spec = StageSpec(kind="x", shape=shape, num_shards=3)
            js = job_spec(prof, spec, stage="st", run_dir=tmp_path / "run", job_name="run.st",
                          output=str(tmp_path / "%A_%a.out"), worker_argv_tail=[str(tmp_path), "st", "@f"],
                          array="0-2%2", chdir=tmp_path, data_root=str(tmp_path / "data"),
                          api_key_env="OPENAI_API_KEY")
            text = render_script(js)
            bash_n(text, tmp_path)
            assert "#SBATCH --array=0-2%2" in text and "--open-mode=append" in text
            assert f"#SBATCH --output={tmp_path}/%A_%a.out" in text
            if prof.container.runtime == "apptainer":
                assert "apptainer exec" in text and prof.container.image_for(shape) in text
                assert "OPENAI_API_KEY" in text  # passed by NAME
            if shape == "gpu-multinode":
                assert "-m skymath.train.launch --nproc-per-node" in text and "srun " in text
                if prof.gpu_gres:
                    assert f"#SBATCH --gres=gpu:{prof.gpus_per_node}" in text
        bash_n(render_stop_job(prof, run_dir=tmp_path, service="svc", service_job="12,13",
                               stop_file=tmp_path / "STOP", output=str(tmp_path / "stop.out"),
                               chdir=tmp_path, job_name="run.svc.stop"), tmp_path)


def test_example_profile_header_uses_site_values():
    prof = load_profile("example")
    spec = StageSpec(kind="x", shape="gpu-multinode", resources={"nodes": 4, "time": "2-00:00:00"})
    js = job_spec(prof, spec, stage="sft", run_dir=Path("/r"), job_name="r.sft", output="/r/%A_%a.out",
                  worker_argv_tail=["/r", "sft", "@f"], array="0", chdir=Path("/r"))
    text = render_script(js)
    for line in ["#SBATCH --partition=gpu-a100", "#SBATCH --account=mathlab", "#SBATCH --qos=normal",
                 "#SBATCH --nodes=4", "#SBATCH --gres=gpu:8", "#SBATCH --exclusive",
                 "#SBATCH --time=2-00:00:00",
                 "#SBATCH --signal=B:USR2@300", "#SBATCH --constraint=a100", "module purge",
                 "module load apptainer/1.3.4", "export NCCL_SOCKET_IFNAME=ib0", "--nproc-per-node 8",
                 'export HF_HOME="/project/mathlab/hf-cache"', 'export SKYMATH_SCRATCH="/scratch/$USER/skymath"']:
        assert line in text, line


def _evil_profile(tmp_path: Path, pwn: Path) -> Path:
    e = [v.format(p=pwn) for v in EVIL]
    data = yaml.safe_load((Path(__file__).parents[1] / "launch/clusters/local.yaml").read_text())
    data.update(partitions={"cpu": e[0], "gpu": e[1]}, account=e[2], qos=e[3], modules=e[:3],
                env={"SKY_A": e[0], "SKY_B": e[4], "SKY_C": e[5]}, hf_home=f"{tmp_path}/hf/{e[0]}",
                scratch=f"{tmp_path}/scratch/$USER/{e[1]}", mail_user=e[1], mail_type=e[0],
                sbatch_extra=[f"--comment={e[3]}"], max_array_size=10)
    p = tmp_path / "evil.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_hostile_values_render_inert_even_when_the_script_runs(tmp_path):
    pwn = tmp_path / "pwned"
    cfg = """
run: {name: evil, root: "@ROOT@"}
stages:
  one: {kind: support.stage_emit, shape: cpu-array, params: {records_per_shard: 2}}
"""
    run, cfg_, ex = make_executor(tmp_path, cfg, _evil_profile(tmp_path, pwn))
    ex.launch(dry_run=True)
    (script,) = sorted((run.root / "slurm").glob("*-dry/one.p0.sh"))
    text = script.read_text()
    bash_n(text, tmp_path)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "1", "USER": "tester"}
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert not pwn.exists(), "a profile value was executed by the shell"
    assert r.returncode == 0, r.stderr
    assert run.is_done("one", 0)
    assert (tmp_path / "scratch" / "tester").is_dir()  # $USER expanded, $(...) did not


def test_hostile_job_name_is_taken_literally_by_sbatch(tmp_path):
    require_cluster()
    pwn = tmp_path / "pwned"
    name = f"x$(touch {pwn}); a; rm -rf ~"
    prof = load_profile("local")
    js = job_spec(prof, StageSpec(kind="x", shape="cpu-single", resources={"mem_gb": 0.1, "time": "00:01:00"}),
                  stage="st", run_dir=tmp_path, job_name=name, output=str(tmp_path / "%A_%a.out"),
                  worker_argv_tail=[str(tmp_path), "st", "0"], array="0", chdir=tmp_path)
    js.command = "true"
    f = tmp_path / "job.sh"
    f.write_text(render_script(js))
    r = subprocess.run(["sbatch", "--parsable", "--hold", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    try:
        show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        assert f"JobName={name}" in show
    finally:
        subprocess.run(["scancel", job])
    assert not pwn.exists()


def test_api_key_never_reaches_scripts_or_ledger(tmp_path, monkeypatch):
    secret = "sk-test-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", "hf_" + secret)
    cfg = """
run: {name: sec, root: "@ROOT@"}
stages:
  a: {kind: support.stage_emit, shape: cpu-array, num_shards: 2, params: {records_per_shard: 1}}
  b: {kind: support.stage_emit, shape: gpu-array, depends_on: [a], params: {records_per_shard: 1}}
  c: {kind: support.stage_emit, shape: gpu-multinode, depends_on: [b], params: {records_per_shard: 1}}
  d: {kind: support.stage_emit, shape: cpu-single, depends_on: [c], params: {records_per_shard: 1}}
"""
    example = tmp_path / "ex.yaml"
    data = yaml.safe_load(load_profile("example").model_dump_json())
    data["max_array_size"] = 100  # dry-run without asking a cluster
    example.write_text(yaml.safe_dump(data))
    run, _, ex = make_executor(tmp_path, cfg, example)
    ex.launch(dry_run=True)
    scripts = list((run.root / "slurm").rglob("*.sh"))
    assert len(scripts) == 4
    assert all("OPENAI_API_KEY" in s.read_text() for s in scripts)  # the NAME crosses, never the value
    # and a real launch on the local cluster (values reach jobs through the environment only)
    require_cluster()
    run2, _, ex2 = make_executor(tmp_path / "real", cfg.replace("sec", "sec2"))
    ex2.launch(["a"])
    wait_jobs(job_ids(run2))
    assert run2.stage_complete("a", 2)
    for root in (run.root, run2.root):
        for f in root.rglob("*"):
            if f.is_file():
                assert secret not in f.read_text(errors="replace"), f


def test_profile_errors_are_one_line_with_file_line_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\npartitions:\n  cpu: c\n  gpus: g\n")
    with pytest.raises(UserError, match=r"bad\.yaml:4: partitions\.gpus: unknown key \(did you mean 'gpu'\?\)"):
        load_profile(str(p))
    p.write_text("container:\n  env_pass: ['OPENAI_API_KEY=sk-1']\n")
    with pytest.raises(UserError, match="env_pass"):
        load_profile(str(p))
    with pytest.raises(UserError, match="did you mean 'local'"):
        load_profile("locla")
    assert isinstance(load_profile("local"), ClusterProfile)


def test_index_helpers_and_array_split():
    assert compress_indices([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert compress_indices([3, 17, 42]) == "3,17,42"
    assert expand_indices("[0-2,5,7-9:2%4]") == [0, 1, 2, 5, 7, 9]
    parts = split_array(list(range(10)), 4)
    assert [(p.base, p.shards, p.tasks) for p in parts] == [
        (0, [0, 1, 2, 3], [0, 1, 2, 3]), (4, [4, 5, 6, 7], [0, 1, 2, 3]), (8, [8, 9], [0, 1])]
    assert [(p.base, p.tasks) for p in split_array([3, 17, 42], 1001)] == [(0, [3, 17, 42])]
    with pytest.raises(UserError, match=r"stage st: resources.time 3-00:00:00 is above the time limit 2-00:00:00"):
        check_time("st", "3-00:00:00", "2-00:00:00", "time_limits.gpu")
    assert check_time("st", "01:00:00", "2-00:00:00", "time_limits.gpu") == "01:00:00"
    for bad in ("soon", "01:00:00\n"):
        with pytest.raises(UserError):
            check_time("st", bad, None, "time_limits.cpu")
    assert shell_vars("/s/$USER/${X}/$(id)/`x`") == '"/s/$USER/${X}/\\$(id)/\\`x\\`"'


def test_render_and_plan_import_nothing_heavy():
    code = ("import sys; from skymath.executors import slurm, render; "
            "print(any(m in sys.modules for m in ('torch', 'submitit', 'transformers')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr
