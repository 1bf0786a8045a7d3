"""`skymath estimate CONFIG`: requests, prompt tokens and cost range per synth stage, before submitting."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    ap = sub.add_parser("estimate", help="estimate API requests, tokens and cost of the synth stages",
                        description=__doc__)
    ap.add_argument("config", help="pipeline config (YAML)")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value (dotted key), repeatable")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.set_defaults(func=main)


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:g}"


def main(args: argparse.Namespace) -> int:
    import json

    from skymath.config import load_config
    from skymath.synth.estimate import estimate

    cfg = load_config(args.config, args.override)
    rows = estimate(cfg)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no synth stage in this config")
        _print_sft_disk(cfg)
        return 0
    from skymath.synth.estimate import format_estimate  # issue 14: expected records, yields, cost range

    print("\n".join(format_estimate(rows)))
    _print_sft_disk(cfg)
    return 0


def _print_sft_disk(cfg) -> None:
    """Checkpoint size and disk needed per sft stage (skymath.train.footprint)."""
    from skymath.train.footprint import footprint_lines

    for line in footprint_lines(cfg):
        print(line)
