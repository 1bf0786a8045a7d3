"""The container wrapper: the exact command per shape and runtime, names (never values) crossing
--cleanenv, node-local caches, quoting that no profile value can break out of, and runtime
`none` lines that really run (in bash here, and as a job on the local Slurm cluster)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support.containers_runtime import env_with_path, install_runtime, read_calls

from skymath.containers import (
    GPU_SHAPES,
    NODE_CACHE_VARS,
    PROXY_ENV_NAMES,
    RUNTIMES,
    SHAPES,
    ContainerSpec,
    HostExpr,
    env_export_lines,
    wrap_command,
)
from skymath.errors import UserError

IMAGES = {
    "cpu-single": "/img/skymath-synth.sif",
    "cpu-array": "/img/skymath-synth.sif",
    "gpu-array": "/img/skymath-eval.sif",
    "gpu-multinode": "/img/skymath-train.sif",
}
ARGV = ["python3", "-m", "skymath.worker", "/runs/r 1", "synth", "3"]
SECRET = "sk-test-Zq9-DO-NOT-RENDER-4417"


def spec(shape: str, runtime: str, **kw) -> ContainerSpec:
    return ContainerSpec.for_shape(
        shape, runtime=runtime, images=IMAGES, run_dir="/runs/r 1", data_root="/data", hf_home="/hf",
        scratch="/scratch/u", binds=["/project"], env_pass=["HF_TOKEN"], api_key_env="OPENAI_API_KEY", **kw,
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_renders_expected_command(shape, runtime):
    line = spec(shape, runtime).wrap(ARGV)
    words = shlex.split(line)
    if runtime == "none":
        assert words == ARGV
        return
    gpu = shape in GPU_SHAPES
    assert words[:2] == ["bash", "-c"] and words[3] == "skymath-env"
    assert words[4:] == [
        runtime, "exec", *(["--nv"] if gpu else []), "--cleanenv",
        "--bind", "/runs/r 1,/data,/hf,/scratch/u,/project",
        "--env", "PYTHONNOUSERSITE=1",  # ~/.local never shadows the image's packages
        "--env", "HF_HOME=/hf",
        IMAGES[shape], *ARGV,
    ]
    script = words[2]
    prefix = "APPTAINERENV_" if runtime == "apptainer" else "SINGULARITYENV_"
    assert f'export "{prefix}$_v=' in script and script.endswith('exec "$@"')
    for name in ("OPENAI_API_KEY", "HF_TOKEN", "${!SLURM_@}", "${!SKYMATH_@}", *PROXY_ENV_NAMES):
        assert f" {name} " in script.replace("${!", " ${!").replace("@}", "@} ")
    assert ("CUDA_VISIBLE_DEVICES" in script) == gpu and ("${!NCCL_@}" in script) == gpu
    for var in NODE_CACHE_VARS:
        assert f"{prefix}{var}=" in script
    assert " HF_HOME " not in f" {script.split(';')[0]} "  # given as a value, so not also by name
    bash = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True)
    assert bash.returncode == 0, bash.stderr


def test_no_secret_value_is_ever_rendered(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET + "-hf")
    rendered = []
    for shape in SHAPES:
        for runtime in RUNTIMES:
            s = spec(shape, runtime)
            rendered.append(s.wrap(ARGV))
            rendered += s.export_lines()
    text = "\n".join(rendered)
    assert SECRET not in text
    assert "OPENAI_API_KEY" in text and "HF_TOKEN" in text


def test_names_cross_cleanenv_through_the_environment_only(tmp_path):
    """Run the wrapped line against a recording stand-in runtime: the key arrives as
    APPTAINERENV_OPENAI_API_KEY in the runtime's environment, never in its argv; unset names
    stay unset (an empty CUDA_VISIBLE_DEVICES would hide every GPU); NCCL_* are all copied."""
    log = install_runtime(tmp_path / "bin", "apptainer")
    line = spec("gpu-multinode", "apptainer").wrap(["true"])
    env = env_with_path(tmp_path / "bin", OPENAI_API_KEY=SECRET, NCCL_IB_HCA="mlx5", NCCL_DEBUG="WARN",
                        SLURM_NODEID="1", SKYMATH_NODE_CACHE="/tmp/nodecache")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("HF_TOKEN", None)
    r = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (call,) = read_calls(log)
    assert SECRET not in " ".join(call["argv"])
    got = call["env"]
    assert got["APPTAINERENV_OPENAI_API_KEY"] == SECRET
    assert got["APPTAINERENV_NCCL_IB_HCA"] == "mlx5" and got["APPTAINERENV_NCCL_DEBUG"] == "WARN"
    assert got["APPTAINERENV_SLURM_NODEID"] == "1"
    assert "APPTAINERENV_CUDA_VISIBLE_DEVICES" not in got and "APPTAINERENV_HF_TOKEN" not in got
    assert got["APPTAINERENV_TRITON_CACHE_DIR"] == "/tmp/nodecache/triton"
    assert got["APPTAINERENV_VLLM_CACHE_ROOT"] == "/tmp/nodecache/vllm"


def test_proxy_and_ca_variables_cross_cleanenv_and_user_site_is_off(tmp_path):
    """Issue 12: API calls from a --cleanenv container need the site's proxy and CA bundle; a
    user's ~/.local packages must not shadow the image's (PYTHONNOUSERSITE=1)."""
    log = install_runtime(tmp_path / "bin", "apptainer")
    line = spec("cpu-array", "apptainer").wrap(["true"])
    proxies = {"HTTPS_PROXY": "http://proxy:3128", "https_proxy": "http://proxy:3128", "NO_PROXY": "localhost,.site",
               "no_proxy": "localhost", "HTTP_PROXY": "http://proxy:3128", "SSL_CERT_FILE": "/etc/ssl/site.pem",
               "SSL_CERT_DIR": "/etc/ssl/certs", "REQUESTS_CA_BUNDLE": "/etc/ssl/site.pem",
               "CURL_CA_BUNDLE": "/etc/ssl/site.pem"}
    env = env_with_path(tmp_path / "bin", **proxies)
    env.pop("http_proxy", None)
    r = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (call,) = read_calls(log)
    for name, value in proxies.items():
        assert call["env"][f"APPTAINERENV_{name}"] == value, name
    assert "APPTAINERENV_http_proxy" not in call["env"]  # unset stays unset
    argv = call["argv"]
    assert argv[argv.index("--env") + 1] == "PYTHONNOUSERSITE=1" and "--cleanenv" in argv


def test_singularity_uses_its_own_prefix(tmp_path):
    log = install_runtime(tmp_path / "bin", "singularity")
    line = spec("cpu-array", "singularity").wrap(["true"])
    env = env_with_path(tmp_path / "bin", OPENAI_API_KEY=SECRET, CUDA_VISIBLE_DEVICES="0")
    subprocess.run(["bash", "-c", line], env=env, check=True, timeout=60)
    (call,) = read_calls(log)
    assert call["env"]["SINGULARITYENV_OPENAI_API_KEY"] == SECRET
    assert "SINGULARITYENV_CUDA_VISIBLE_DEVICES" not in call["env"]  # CPU shape: CUDA names not passed
    assert "--nv" not in call["argv"]


def test_profile_paths_expand_user_variables_on_the_node(tmp_path):
    log = install_runtime(tmp_path / "bin", "apptainer")
    s = ContainerSpec.for_shape("cpu-single", runtime="apptainer", images={"default": "/img/$USER/s.sif"},
                                scratch="/scratch/${USER}/skymath", binds=["/home/$USER"])
    env = env_with_path(tmp_path / "bin", USER="alice")
    subprocess.run(["bash", "-c", s.wrap(["true"])], env=env, check=True, timeout=60)
    argv = read_calls(log)[0]["argv"]
    assert argv[argv.index("--bind") + 1] == "/scratch/alice/skymath,/home/alice"
    assert "/img/alice/s.sif" in argv


def test_runtime_none_line_runs_as_is(tmp_path):
    """Awkward arguments survive quoting; a HostExpr expands; the exports set caches and values."""
    out = tmp_path / "out.txt"
    code = "import os, sys; open(sys.argv[1], 'w').write(repr(sys.argv[2:]) + '|' + os.environ['TRITON_CACHE_DIR'] + '|' + os.environ['HF_HOME'])"
    argv = [sys.executable, "-c", code, str(out), "a b", "$HOME", "'q'", "x;touch y", HostExpr("${RDZV}:29500")]
    s = spec("gpu-multinode", "none")
    script = "\n".join([*s.export_lines(), s.wrap(argv)])
    env = dict(os.environ, RDZV="node7", SKYMATH_NODE_CACHE=str(tmp_path / "nc"))
    env.pop("TRITON_CACHE_DIR", None)
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    args, cache, hf = out.read_text().split("|")
    assert args == repr(["a b", "$HOME", "'q'", "x;touch y", "node7:29500"])
    assert cache == f"{tmp_path}/nc/triton" and hf == "/hf"
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"binds": ["/a,/b"]},
        {"binds": ["/x$(touch /tmp/pwned)"]},
        {"binds": ["/x`id`"]},
        {"env_values": {"HF_HOME": "/a,b"}},
        {"env_values": {"X": "$(id)"}},
        {"env_values": {"BAD-NAME": "1"}},
        {"env_names": ["A;rm -rf ~"]},
        {"env_names": ["*"]},
        {"env_names": ["X"], "env_values": {"X": "1"}},
    ],
)
def test_unsafe_profile_values_are_refused(kwargs):
    args = {"gpu": False, "binds": [], "env_names": [], "env_values": {}} | kwargs
    with pytest.raises(UserError):
        wrap_command("apptainer", "/img/a.sif", ["true"], **args)


def test_hostexpr_refuses_code_and_missing_image_is_a_user_error():
    for bad in ("$(id)", "`id`", "${A}$(b)", "a b", ""):
        with pytest.raises(ValueError):
            HostExpr(bad)
    with pytest.raises(UserError, match="container.images"):
        ContainerSpec.for_shape("gpu-array", runtime="apptainer", images={})
    with pytest.raises(UserError, match="runtime"):
        wrap_command("docker", "/i.sif", ["true"], gpu=False)


def test_export_lines_parse_and_never_expand_values(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    for runtime in RUNTIMES:
        lines = env_export_lines(runtime, ["OPENAI_API_KEY", "NCCL_*"], {"HF_HOME": "/hf dir"}, gpu=True)
        text = "\n".join(lines)
        assert SECRET not in text
        assert subprocess.run(["bash", "-n", "-c", text]).returncode == 0
    assert "export HF_HOME='/hf dir'" in env_export_lines("none", [], {"HF_HOME": "/hf dir"})


@pytest.mark.slurm
def test_runtime_none_job_runs_on_the_local_slurm_cluster(slurm_cluster, tmp_path):
    """The wrapped line + export lines, submitted as a real batch job (runtime none, cpu-single)."""
    out = tmp_path / "job.out"
    code = "import os, sys; open(sys.argv[1], 'w').write(os.environ['SLURM_JOB_ID'] + ' ' + os.environ['TRITON_CACHE_DIR'])"
    s = spec("cpu-single", "none")
    script = tmp_path / "job.sh"
    script.write_text("\n".join(["#!/bin/bash", "set -euo pipefail", *s.export_lines(),
                                 s.wrap([sys.executable, "-c", code, str(out)])]) + "\n")
    r = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-p", "cpu", "-c", "1", "--mem=256M", "-t", "5",
         "-o", str(tmp_path / "slurm-%j.log"), str(script)],
        capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stderr + "".join(p.read_text() for p in tmp_path.glob("slurm-*.log"))
    job_id = r.stdout.strip().split(";")[0]
    got_id, cache = out.read_text().split()
    assert got_id == job_id
    assert cache.startswith("/tmp/skymath-") and cache.endswith("/triton")


def test_hf_home_in_values_is_not_also_passed_by_name():
    s = spec("cpu-array", "apptainer")
    assert s.env_values == {"HF_HOME": "/hf"}
    first = shlex.split(s.wrap(["true"]))[2].split(";")[0]
    assert "HF_HOME" not in first.split()
    assert Path(IMAGES["cpu-array"]).name in s.wrap(["true"])
