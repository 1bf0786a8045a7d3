"""`skymath plan CONFIG`: the stages, shards, shapes, dependencies and resources as a table."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="show the stage DAG of a config as a table (submits nothing)")
    p.add_argument("config")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from skymath.config import load_config
    from skymath.pipeline.runner import plan_rows

    cfg = load_config(args.config, args.override)
    rows = plan_rows(cfg)
    table = Table(title=f"skymath plan: {cfg.run.name} ({len(rows)} stages, "
                        f"{sum(int(r['shards']) for r in rows)} shards)")
    for col in rows[0] if rows else ["stage"]:
        table.add_column(col)
    for r in rows:
        table.add_row(*r.values())
    Console(width=200).print(table)
    return 0
