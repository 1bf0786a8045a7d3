"""The jobs a launch would submit, read back from their rendered scripts: the `#SBATCH` lines are
the exact options sbatch will see, so the checks look at those, not at the config they came from."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_SBATCH = re.compile(r"^#SBATCH\s+(--[A-Za-z][A-Za-z0-9-]*)(?:=(.*))?\s*$")


def parse_mem_mb(text: str | None) -> int | None:
    """sbatch --mem value ('4096M', '64G', '1T', '512') -> MB."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)B?", text.strip().upper())
    if not m:
        return None
    n, unit = float(m.group(1)), m.group(2) or "M"
    return int(n * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit])


@dataclass
class JobRequest:
    """One planned submission: stage, role, the script and its sbatch options."""

    stage: str
    role: str
    key: str
    script: Path
    tasks: int  # array tasks (1 for a plain job)
    max_task: int  # highest array task id (0 for a plain job)
    options: dict[str, str | None] = field(default_factory=dict)
    text: str = ""

    def opt(self, name: str) -> str | None:
        return self.options.get(name)

    @property
    def partition(self) -> str | None:
        return self.opt("--partition")

    @property
    def nodes(self) -> int:
        v = self.opt("--nodes") or "1"
        return int(v.split("-")[0]) if v.split("-")[0].isdigit() else 1

    @property
    def cpus(self) -> int:
        v = self.opt("--cpus-per-task") or "1"
        return int(v) if v.isdigit() else 1

    @property
    def mem_mb(self) -> int | None:
        return parse_mem_mb(self.opt("--mem"))

    @property
    def gres(self) -> tuple[str, str | None, int] | None:
        """(name, type, count) of the first --gres entry, e.g. ('gpu', None, 8)."""
        v = self.opt("--gres")
        if not v:
            return None
        parts = v.split(",")[0].split(":")
        if len(parts) == 1:
            return parts[0], None, 1
        count = int(parts[-1]) if parts[-1].isdigit() else 1
        gtype = parts[1] if len(parts) == 3 else (None if parts[-1].isdigit() else parts[1])
        return parts[0], gtype, count


def read_job(stage: str, role: str, key: str, script: Path, shards: int, tasks: list[int]) -> JobRequest:
    text = script.read_text(encoding="utf-8")
    opts: dict[str, str | None] = {}
    for line in text.splitlines():
        m = _SBATCH.match(line)
        if not m:
            if line.startswith("#SBATCH"):
                continue
            if line and not line.startswith("#"):
                break  # sbatch stops reading #SBATCH at the first command
            continue
        value = m.group(2)
        if value is not None:
            try:
                words = shlex.split(value)
                value = words[0] if len(words) == 1 else value
            except ValueError:
                pass
        opts[m.group(1)] = value
    n = max(1, len(tasks)) if opts.get("--array") else 1
    return JobRequest(stage, role, key, script, n, max(tasks) if tasks and opts.get("--array") else 0, opts, text)


def requests_from_plan(planned: list) -> list[JobRequest]:
    """PlannedJob objects (skymath.executors.planner) -> JobRequests."""
    out = []
    for j in planned:
        if j.script is None:
            continue
        out.append(read_job(j.stage, j.role, j.key, Path(j.script), len(j.shards), list(j.tasks)))
    return out
