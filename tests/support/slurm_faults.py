"""A stand-in for a Slurm client command that fails on purpose (a scheduler that times out) and
records every call: put its directory first on PATH. It execs the real command otherwise."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path


class FlakyTool:
    def __init__(self, bin_dir: Path, tool: str) -> None:
        self.bin_dir, self.tool = bin_dir, tool
        self.real = shutil.which(tool)
        assert self.real, f"{tool} is not installed"
        bin_dir.mkdir(parents=True, exist_ok=True)
        self.calls_file = bin_dir / f"{tool}.calls"
        self.fail_file = bin_dir / f"{tool}.fail"  # how many calls still fail ("always" = all)
        script = bin_dir / tool
        script.write_text(f"""#!/bin/bash
printf '%s\\n' "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")" >> {self.calls_file}
left=$(cat {self.fail_file} 2>/dev/null || echo 0)
if [ "$left" = always ] || [ "$left" -gt 0 ]; then
  [ "$left" = always ] || echo $((left - 1)) > {self.fail_file}
  echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2
  exit 1
fi
exec {self.real} "$@"
""")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)

    def fail(self, times: int | str) -> None:
        self.fail_file.write_text(str(times))

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines() if line.strip()]

    def path(self) -> str:
        return f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}"
