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
from skymath.paths import default_data_root

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
                 "#SBATCH --signal=B:USR2@900", "#SBATCH --constraint=a100", "module purge",
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


# ---- issue 12: the cluster-path defects (render level) --------------------------------------------------------
PRESETS = ["skywork-mistral-7b", "skywork-llama2-7b", "skywork-deepseekmath-7b"]


def _profile_file(tmp_path: Path, base: str = "example", **changes) -> Path:
    data = yaml.safe_load(load_profile(base).model_dump_json(exclude_none=True))
    data["max_array_size"] = 1001  # plan without asking a cluster
    data.update(changes)
    p = tmp_path / f"{base}-{uuid.uuid4().hex[:6]}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _plan_preset(tmp_path: Path, preset: str, profile: Path):
    from skymath.executors.slurm import SlurmExecutor
    from skymath.pipeline import runner

    run, cfg = runner.prepare_run(Path(__file__).parents[1] / "launch" / f"{preset}.yaml",
                                  [f"run.root={tmp_path / 'runs'}"], executor="slurm")
    jobs = SlurmExecutor(run, cfg, load_profile(str(profile)), quiet=True).plan()
    return cfg, {j.key: j for j in jobs}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_api_key_is_passed_by_the_example_profile(tmp_path, preset):
    """The presets read OPE6I_API_KEY (a typo) while the example profile passes OPENAI_API_KEY
    through --cleanenv: every synthesis shard failed after queueing."""
    prof = load_profile("example")
    cfg, jobs = _plan_preset(tmp_path, preset, _profile_file(tmp_path))
    key = cfg.llm.api_key_env
    assert prof.container.runtime == "apptainer"  # --cleanenv: only passed names cross
    assert key in prof.container.env_pass, f"{preset} reads {key}, example profile passes {prof.container.env_pass}"
    synth = jobs["synth-normal.p0"].script.read_text()
    assert "for _v in " in synth and f" {key} " in synth.split("for _v in ", 1)[1].split(";", 1)[0] + " "


@pytest.mark.parametrize("preset", PRESETS)
def test_gpu_constraint_goes_on_gpu_shapes_only(tmp_path, preset):
    _, jobs = _plan_preset(tmp_path, preset, _profile_file(tmp_path))
    for key, job in jobs.items():
        text = job.script.read_text()
        shape = text.split("# shape: ", 1)[1].split(" ", 1)[0]
        gpu = shape.startswith("gpu")
        assert ("#SBATCH --constraint=a100" in text) == gpu, (key, shape)
        assert ("#SBATCH --partition=gpu-a100" in text) == gpu
        assert "#SBATCH --account=mathlab" in text and "#SBATCH --qos=normal" in text
    assert "#SBATCH --partition=cpu\n" in jobs["synth-normal.p0"].script.read_text()


def test_site_options_merge_stage_over_shape_over_top_level(tmp_path):
    from skymath.executors.render import site_options

    prof = load_profile(str(_profile_file(
        tmp_path, "local", account="topacct", qos="topqos", constraint="top", exclude="bad1", reservation="resv",
        sbatch_extra=["--comment=top", "--nice=5"],
        shapes={"gpu-array": {"account": "gpuacct", "constraint": "a100", "qos": "gpuqos", "time_limit": "02:00:00",
                              "gres_name": "gpu:a100", "sbatch_extra": ["--comment=shape"]},
                "cpu-array": {"partition": "cpu-big", "exclude": "bad2"}})))
    gpu = StageSpec(kind="x", shape="gpu-array", resources={"gpus": 1, "qos": "stageqos", "time": "01:00:00",
                                                            "sbatch_extra": ["--nice=1"]})
    js = job_spec(prof, gpu, stage="ev", run_dir=tmp_path, job_name="r.ev", output="/o", worker_argv_tail=["a"],
                  array="0", chdir=tmp_path)
    text = render_script(js)
    for line in ["--account=gpuacct", "--qos=stageqos", "--constraint=a100", "--exclude=bad1", "--reservation=resv",
                 "--partition=gpu", "--gres=gpu:a100:1", "--comment=shape", "--nice=1", "--time=01:00:00"]:
        assert f"#SBATCH {line}\n" in text, line
    assert "--comment=top" not in text and "--nice=5" not in text  # the same option, replaced
    cpu = render_script(job_spec(prof, StageSpec(kind="x", shape="cpu-array"), stage="s", run_dir=tmp_path,
                                 job_name="r.s", output="/o", worker_argv_tail=["a"], array="0", chdir=tmp_path))
    for line in ["--account=topacct", "--qos=topqos", "--constraint=top", "--exclude=bad2", "--partition=cpu-big",
                 "--comment=top", "--nice=5"]:
        assert f"#SBATCH {line}\n" in cpu, line
    assert "a100" not in cpu
    assert site_options(prof, "gpu-array").keys["time_limit"] == "shapes.gpu-array.time_limit"
    with pytest.raises(UserError, match=r"stage ev: resources.time 03:00:00 is above the time limit 02:00:00 "
                                        r"allowed by the cluster profile \(shapes.gpu-array.time_limit\)"):
        job_spec(prof, StageSpec(kind="x", shape="gpu-array", resources={"time": "03:00:00"}), stage="ev",
                 run_dir=tmp_path, job_name="r.ev", output="/o", worker_argv_tail=["a"], array="0", chdir=tmp_path)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skymath", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})


TINY_CFG = """
run: {name: tiny, root: "@ROOT@"}
stages:
  a: {kind: support.stage_emit, shape: cpu-array, num_shards: 2, resources: {time: "@TIME@", partition: "@PART@"}}
"""


def _tiny(tmp_path: Path, time_: str = "00:10:00", part: str = "cpu") -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_CFG.replace("@ROOT@", str(tmp_path / "runs")).replace("@TIME@", time_).replace("@PART@", part))
    return p


def test_time_above_the_profile_limit_is_an_error_not_a_clamp(tmp_path):
    prof = _profile_file(tmp_path, "local", time_limits={"cpu": "01:00:00"})
    r = _cli("run", str(_tiny(tmp_path, "02:00:00")), "--executor", "slurm", "--profile", str(prof), "--dry-run",
             "--no-check")
    if "unrecognized arguments: --no-check" in r.stderr:  # before `skymath check` (12B) lands
        r = _cli("run", str(_tiny(tmp_path, "02:00:00")), "--executor", "slurm", "--profile", str(prof), "--dry-run")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "stage a: resources.time 02:00:00 is above the time limit 01:00:00" in r.stderr
    assert "(time_limits.cpu)" in r.stderr and "Traceback" not in r.stderr
    assert not list((tmp_path / "runs").rglob("*.sh"))  # nothing rendered, nothing queued


BAD_CHARS = {"newline": "\n", "carriage return": "\r", "NUL": "\x00", "0x1b": "\x1b"}


@pytest.mark.parametrize("char", list(BAD_CHARS))
@pytest.mark.parametrize("key", ["account", "partitions.cpu", "shapes.gpu-array.constraint", "env.SKY_X",
                                 "sbatch_extra", "modules", "setup", "container.images.cpu-array", "mail_user"])
def test_control_characters_in_profile_values_are_a_config_error_naming_the_key(tmp_path, key, char):
    value = f"ok{BAD_CHARS[char]}#SBATCH --wrap=touch-pwned"
    data = yaml.safe_load((Path(__file__).parents[1] / "launch/clusters/local.yaml").read_text())
    node, parts = data, key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    last = parts[-1]
    node[last] = {"sbatch_extra": [f"--comment={value}"], "modules": [value], "setup": [value]}.get(last, value)
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as e:
        load_profile(str(prof))
    msg = str(e.value)
    assert "p.yaml:" in msg and f"{key}" in msg.split(": Value error")[0], msg
    assert f"control character ({char})" in msg and "\n" not in msg


def test_control_characters_in_config_paths_and_run_time_values_exit_2(tmp_path):
    prof = _profile_file(tmp_path, "local")
    # a stage value in the pipeline config
    r = _cli("run", str(_tiny(tmp_path, part="cpu\\n#SBATCH --wrap=x")), "--executor", "slurm", "--profile",
             str(prof), "--dry-run")
    assert r.returncode == 2 and "stages.a.resources.partition" in r.stderr and "control character (newline)" in r.stderr
    bad_root = tmp_path / "root.yaml"
    bad_root.write_text(_tiny(tmp_path).read_text().replace(f'root: "{tmp_path / "runs"}"', f'root: "{tmp_path}/r\\rx"'))
    r = _cli("run", str(bad_root), "--executor", "slurm", "--profile", str(prof), "--dry-run")
    assert r.returncode == 2 and "run.root" in r.stderr and "carriage return" in r.stderr, r.stderr
    # a value only known at run time: the working directory becomes #SBATCH --chdir
    cwd = tmp_path / "we\nird"
    cwd.mkdir()
    r = _cli("run", str(_tiny(tmp_path)), "--executor", "slurm", "--profile", str(prof), "--dry-run", cwd=cwd)
    assert r.returncode == 2 and "chdir" in r.stderr and "newline" in r.stderr, r.stderr
    assert not list((tmp_path / "runs").rglob("*.sh"))


def test_gpu_multinode_step_gets_cpus_per_task_and_the_one_launcher(tmp_path):
    prof = load_profile(str(_profile_file(tmp_path, "example")))
    js = job_spec(prof, StageSpec(kind="x", shape="gpu-multinode", resources={"nodes": 2, "cpus": 64}), stage="sft",
                  run_dir=Path("/r"), job_name="r.sft", output="/o", worker_argv_tail=["/r", "sft", "@f"], array="0",
                  chdir=Path("/r"))
    text = render_script(js)
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert '--cpus-per-task="$SLURM_CPUS_PER_TASK"' in srun and "#SBATCH --cpus-per-task=64" in text
    assert 'export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"' in text  # any other srun in the job
    assert ("skymath.train.launch --nproc-per-node 8 --port-base 29500 --shutdown-timeout 600 -- /r sft @f"
            in srun)
    assert "torch.distributed.run" not in text and "29500" not in srun.split("--port-base")[0]
    # every shape exports SRUN_CPUS_PER_TASK
    for shape in SHAPES:
        t = render_script(job_spec(prof, StageSpec(kind="x", shape=shape), stage="s", run_dir=Path("/r"),
                                   job_name="r.s", output="/o", worker_argv_tail=["a"], array="0", chdir=Path("/r")))
        assert "export SRUN_CPUS_PER_TASK=" in t


def test_launcher_torchrun_arguments_are_what_torch_2_13_accepts():
    """The launcher's torchrun line parses with torch's own parser: USR2 is handled (forwarded to
    the workers), the shutdown timeout is the profile's checkpoint grace, the port is per job."""
    from torch.distributed.run import parse_args

    from skymath.train.launch import launch_argv, rendezvous_port

    env = {"SLURM_JOB_ID": "123456", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node1"}
    argv = launch_argv(["/r", "sft", "@f"], env, nproc_per_node=8, port_base=29500, shutdown_timeout=600)
    i = argv.index("torch.distributed.run")
    args = parse_args(argv[i + 1:])
    assert "SIGUSR2" in args.signals_to_handle.split(",") and "SIGTERM" in args.signals_to_handle
    assert args.shutdown_timeout == 600 and args.nnodes == "2" and args.nproc_per_node == "8"
    assert args.rdzv_endpoint.endswith(":29956") and args.rdzv_id == "123456"
    assert rendezvous_port({"SLURM_JOB_ID": "123457"}) == 29957 != rendezvous_port({"SLURM_JOB_ID": "123456"})
    assert args.training_script == "skymath.worker" and args.training_script_args == ["/r", "sft", "@f"]


def test_checkpoint_grace_must_fit_inside_the_signal_lead(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint_grace_s: .*600 s \+ 30 s for the requeue must fit inside "
                                        r"signal_lead_s \(300\)"):
        load_profile(str(_profile_file(tmp_path, "example", signal_lead_s=300, checkpoint_grace_s=600)))
    assert load_profile(str(_profile_file(tmp_path, "local"))).checkpoint_grace == 30  # lead 60 - margin
    assert load_profile("example").checkpoint_grace == 600


def test_the_submitit_executor_is_gone_with_a_pointer_to_the_one_planner(tmp_path):
    """submitit planned differently (dependencies on resubmit, gpu-multinode as one process, no
    containers/sbatch_extra/gres/requeue); it was removed, not kept half-working."""
    r = _cli("run", str(_tiny(tmp_path)), "--executor", "submitit", "--dry-run")
    assert r.returncode == 2 and "--executor slurm" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "launch" / "submitit_launch.py"),
                        str(_tiny(tmp_path)), "--profile", str(_profile_file(tmp_path, "local")), "--dry-run"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "$ sbatch --parsable" in r.stdout and "a.p0.sh" in r.stdout, r.stdout + r.stderr


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("key", ["synth-normal.p0", "coreset.p0", "sft-1.p0"])
def test_golden_scripts_of_the_mistral_preset_with_the_example_profile(tmp_path, key):
    """The exact scripts a user of the example profile submits (paths normalised). A change here
    is a change on every real cluster: review the diff, then SKYMATH_UPDATE_GOLDEN=1 to accept."""
    _, jobs = _plan_preset(tmp_path, "skywork-mistral-7b", _profile_file(tmp_path))
    job = jobs[key]
    text = job.script.read_text().replace(str(job.script.parent), "/RUN/slurm/LAUNCH")
    text = text.replace(str((tmp_path / "runs").resolve()), "/RUNS")
    # the data root is ../shared/data beside the checkout: where the checkout lives differs per machine
    for data in {str(default_data_root().resolve()), str(default_data_root())}:
        text = text.replace(data, "/DATA")
    text = text.replace(str(Path.cwd()), "/CWD")
    golden = GOLDEN / f"example-mistral-{key}.sh"
    if os.environ.get("SKYMATH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run with SKYMATH_UPDATE_GOLDEN=1"
    assert text == golden.read_text()
