"""A stand-in `apptainer`/`singularity` executable for this machine (neither is installable here).

It is not an emulation of containers: it records exactly what the wrapper hands the runtime
(argv, and the APPTAINER*/SINGULARITY* variables in its environment) to a JSON file, and for `exec` runs
the command that follows the image natively, so the policy around the runtime (names crossing
--cleanenv by environment, never argv; unset names staying unset; `check`'s table and exit
code) is exercised by real processes. What Apptainer itself does is checked on the cluster with
`skymath containers check`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

_SCRIPT = r'''#!{python}
import json, os, sys
log = {log!r}
argv = sys.argv[1:]
env = {{k: v for k, v in os.environ.items() if k.startswith(("APPTAINERENV_", "SINGULARITYENV_", "APPTAINER_", "SINGULARITY_"))}}
with open(log, "a") as f:
    f.write(json.dumps({{"argv": argv, "env": env}}) + "\n")
if argv[:1] != ["exec"]:
    sys.exit(0)
i = 1
while i < len(argv) and argv[i].startswith("-"):
    i += 2 if argv[i] in ("--bind", "-B", "--env") else 1
cmd = argv[i + 1:]
os.execvp(cmd[0], cmd)
'''


def install_runtime(bin_dir: Path, name: str = "apptainer") -> Path:
    """Write the stand-in runtime as bin_dir/name; returns the path of its JSON-lines log."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / f"{name}.calls.jsonl"
    exe = bin_dir / name
    exe.write_text(_SCRIPT.format(python=sys.executable, log=str(log)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return log


def read_calls(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def env_with_path(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
