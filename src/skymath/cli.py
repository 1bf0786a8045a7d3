"""`skymath` command line: thin. Subcommands live in skymath/commands/<name>.py, each with
`register(subparsers)` that adds a parser and sets `func`; none imports torch & co at
module level, so `--help` and `--version` stay instant."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from skymath import __version__
from skymath.errors import StageFailed, UserError


def build_parser() -> argparse.ArgumentParser:
    import skymath.commands as commands

    ap = argparse.ArgumentParser(prog="skymath", description="The Skywork-Math recipe as resumable batch jobs.")
    ap.add_argument("--version", action="version", version=f"skymath {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"skymath.commands.{info.name}").register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (UserError, StageFailed) as e:
        print(f"skymath: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("skymath: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _broken_pipe()


def _broken_pipe() -> int:
    """`skymath status --json | head`: the reader left; exit quietly like other Unix tools (141 =
    128 + SIGPIPE), with stdout pointed at /dev/null so the interpreter's final flush is silent."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())
