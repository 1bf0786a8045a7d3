"""`skymath containers build|check`: the printed build commands, `--run`, and `check`'s table and
exit codes; without Apptainer on PATH both fail with one clear line (as on this machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.containers_runtime import env_with_path, install_runtime, read_calls

from skymath.cli import main

REPO = Path(__file__).resolve().parent.parent


def profile(tmp_path: Path, runtime: str = "apptainer", images: dict | None = None, python: str | None = None) -> Path:
    imgs = images or {
        "cpu-array": str(tmp_path / "img" / "skymath-synth.sif"),
        "cpu-single": str(tmp_path / "img" / "skymath-synth.sif"),
        "gpu-array": str(tmp_path / "img" / "skymath-eval.sif"),
        "gpu-multinode": str(tmp_path / "img" / "skymath-train.sif"),
    }
    lines = ["name: testsite", "scratch: /scratch/$USER/sky", f"python: {python or 'python3'}",
             "container:", f"  runtime: {runtime}", "  images:"]
    lines += [f"    {k}: {v}" for k, v in imgs.items()]
    p = tmp_path / "site.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skymath", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def test_build_prints_commands_with_caches_on_scratch(tmp_path, capsys):
    assert main(["containers", "build", "--profile", str(profile(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert 'export APPTAINER_TMPDIR="/scratch/$USER/sky/apptainer"/tmp' in out
    assert 'export APPTAINER_CACHEDIR="/scratch/$USER/sky/apptainer"/cache' in out
    for kind, shapes in (("synth", "cpu-single, cpu-array"), ("train", "gpu-multinode"), ("eval", "gpu-array")):
        assert f"apptainer build --fakeroot {tmp_path}/img/skymath-{kind}.sif containers/{kind}.def" in out
        assert f"# {kind}: used by {shapes}" in out
    assert subprocess.run(["bash", "-n", "-c", out]).returncode == 0


def test_build_image_paths_follow_the_profile(tmp_path, capsys):
    imgs = {"cpu-array": "/img/cpu.sif", "gpu-array": "/img/a100-skymath-eval.sif", "gpu-multinode": "/img/big.sif"}
    assert main(["containers", "build", "--profile", str(profile(tmp_path, images=imgs))]) == 0
    out = capsys.readouterr().out
    assert "/img/cpu.sif containers/synth.def" in out  # by the shape synth serves
    assert "/img/a100-skymath-eval.sif containers/eval.def" in out  # by name
    assert "/img/big.sif containers/train.def" in out


def test_build_one_image_remote_and_no_profile(tmp_path, capsys):
    assert main(["containers", "build", "--image", "train", "--runtime", "singularity", "--remote"]) == 0
    out = capsys.readouterr().out
    assert "singularity build --remote" in out and "containers/train.def" in out
    assert "containers/synth.def" not in out and "SINGULARITY_TMPDIR" in out
    assert f"{REPO}/containers/images/skymath-train.sif" in out
    # Apptainer has no remote builder: one line, exit 2
    assert main(["containers", "build", "--remote"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no remote builder" in err[0]


def test_without_apptainer_both_fail_with_one_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # nothing on PATH: no apptainer
    for args in (["containers", "check", "--profile", str(profile(tmp_path))],
                 ["containers", "build", "--run", "--image", "synth"]):
        r = cli(args, env=env)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("skymath: error: containers ") and "'apptainer'" in lines[0]


def test_build_run_invokes_the_runtime_with_tmp_and_cache_dirs(tmp_path):
    log = install_runtime(tmp_path / "bin", "apptainer")
    prof = profile(tmp_path)
    prof.write_text(prof.read_text().replace("scratch: /scratch/$USER/sky", "scratch: $SCRATCH/sky"))
    env = env_with_path(tmp_path / "bin", SCRATCH=str(tmp_path / "scratch"))
    r = cli(["containers", "build", "--run", "--image", "synth", "--notest", "--profile", str(prof)], env=env)
    assert r.returncode == 0, r.stderr
    (call,) = read_calls(log)
    assert call["argv"] == ["build", "--fakeroot", "--notest", f"{tmp_path}/img/skymath-synth.sif",
                            "containers/synth.def"]
    assert (tmp_path / "img").is_dir()
    assert call["env"]["APPTAINER_TMPDIR"] == f"{tmp_path}/scratch/sky/apptainer/tmp"
    assert Path(call["env"]["APPTAINER_CACHEDIR"]).is_dir()


def test_check_table_and_exit_codes(tmp_path):
    log = install_runtime(tmp_path / "bin", "apptainer")
    (tmp_path / "img").mkdir()
    for kind in ("synth", "eval"):
        (tmp_path / "img" / f"skymath-{kind}.sif").write_bytes(b"SIF")
    prof = profile(tmp_path, python=sys.executable)
    env = env_with_path(tmp_path / "bin")
    r = cli(["containers", "check", "--profile", str(prof)], env=env, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith(str(tmp_path))}
    synth, ev, train = (rows[f"{tmp_path}/img/skymath-{k}.sif"] for k in ("synth", "eval", "train"))
    assert "ok (0.1.0)" in synth and "MISSING" in train
    assert "FAIL: --nv sees no GPU" in ev  # no nvidia-smi here
    assert r.stdout.strip().endswith("1 ok, 2 failed")
    assert any(c["argv"][:3] == ["exec", "--nv", "--cleanenv"] and "nvidia-smi" in c["argv"] for c in read_calls(log))
    # on a login node: skip the GPU probe; only the missing train image fails
    r = cli(["containers", "check", "--profile", str(prof), "--skip-gpu"], env=env, timeout=300)
    assert r.returncode == 1 and r.stdout.strip().endswith("2 ok, 1 failed")
    (tmp_path / "img" / "skymath-train.sif").write_bytes(b"SIF")
    r = cli(["containers", "check", "--profile", str(prof), "--skip-gpu"], env=env, timeout=300)
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("runtime", ["none"])
def test_check_runtime_none_imports_in_the_submitting_python(tmp_path, runtime, capsys):
    prof = profile(tmp_path, runtime=runtime, python=sys.executable)
    assert main(["containers", "check", "--profile", str(prof)]) == 0
    assert "imports skymath: ok 0.1.0" in capsys.readouterr().out
