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
    head = f"{'stage':<16} {'seeds':>8} {'units':>8} {'requests':>15} {'prompt tok':>15} {'completion tok':>15} {'cost USD':>19}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['stage']:<16} {r['seeds']:>8} {r['units']:>8} "
              f"{_fmt(r['requests_low']) + '-' + _fmt(r['requests_high']):>15} "
              f"{_fmt(r['prompt_tokens_low']) + '-' + _fmt(r['prompt_tokens_high']):>15} "
              f"{_fmt(r['completion_tokens_low']) + '-' + _fmt(r['completion_tokens_high']):>15} "
              f"{r['cost_low_usd']:>9.2f}-{r['cost_high_usd']:<9.2f}")
    print(f"\nprices: {rows[0]['price_model']}; tokens counted with {rows[0]['tokenizer']}")
    for r in rows:
        print(f"{r['stage']}: seeds from {r['seeds_note']}")
    _print_sft_disk(cfg)
    return 0


def _print_sft_disk(cfg) -> None:
    """Checkpoint size and disk needed per sft stage (skymath.train.footprint)."""
    from skymath.train.footprint import footprint_lines

    for line in footprint_lines(cfg):
        print(line)
