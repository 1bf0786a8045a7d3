"""CLI subcommands, discovered by skymath.cli: each module defines `register(subparsers)`."""
