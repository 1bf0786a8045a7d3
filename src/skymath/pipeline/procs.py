"""Is the process that wrote a progress/state file still alive? (pid + host + start time).

A pid alone is reused by the kernel; its start time (field 22 of /proc/PID/stat) is not, so a
recorded (pid, start) pair names one process for good. On another host nothing can be checked
here: the answer is None and the scheduler (squeue) decides.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache


@lru_cache(maxsize=1)
def this_host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot; None where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int | None, host: str | None, start: int | None = None) -> bool | None:
    """True/False for a process on this host; None when it ran elsewhere (cannot tell from here)."""
    if not pid:
        return False
    if host and host != this_host():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except (OverflowError, ValueError):
        return False
    if start is not None:
        now = process_start(int(pid))
        if now is not None and now != start:
            return False  # the pid was reused by another process
    return True
