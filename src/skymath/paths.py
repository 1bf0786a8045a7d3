"""Where the project's own files live (prompts, templates, launch configs) and the shared data."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# src/skymath -> repository root (works for an editable install and a source checkout)
REPO_ROOT = PACKAGE_DIR.parent.parent
PROMPTS_DIR = Path(os.environ.get("SKYMATH_PROMPTS", REPO_ROOT / "prompts"))
SLURM_TEMPLATES_DIR = REPO_ROOT / "slurm"
LAUNCH_DIR = REPO_ROOT / "launch"
CONTAINERS_DIR = REPO_ROOT / "containers"


def default_data_root() -> Path:
    """The benchmark/seed data: $SKYMATH_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("SKYMATH_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def cache_root() -> Path:
    """Per-machine cache (converted tiny model, tokenized datasets): $SKYMATH_CACHE or ~/.cache/skymath."""
    return Path(os.environ.get("SKYMATH_CACHE", Path.home() / ".cache" / "skymath"))
