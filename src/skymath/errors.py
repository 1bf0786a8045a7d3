"""One exception type for problems the user can fix: the CLI prints it as one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, data file, CLI argument): printed without a traceback, exit code 2."""

    exit_code = 2


class StageFailed(Exception):
    """A shard failed in a way the user should see (exit code 1, the message names the shard)."""

    exit_code = 1
