"""`skymath status RUN [--watch] [--json]`: per stage, shards done / running / pending / failed /
missing, and the run's numbers so far (records, requests, tokens, dollars, records/s, ETA)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="per-stage shard states and numbers of a run (markers, progress files, squeue)")
    p.add_argument("run_dir", help="runs/<name>")
    p.add_argument("--json", action="store_true", help="machine-readable output (the same numbers)")
    p.add_argument("--watch", action="store_true",
                   help="refresh until nothing runs or waits any more: a live table on a terminal, "
                        "one line per change otherwise")
    p.add_argument("--plain", action="store_true", help="with --watch: one line per change even on a terminal")
    p.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between refreshes (default 5)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from skymath.errors import UserError
    from skymath.pipeline import runner
    from skymath.pipeline.status import render_status

    if args.interval < 0.5:
        raise UserError(f"--interval: at least 0.5 seconds, got {args.interval:g}")
    if args.json and args.watch:
        raise UserError("--json and --watch: choose one (poll `status --json` for machine-readable updates)")
    run, cfg = runner.open_run(args.run_dir)
    if args.watch:
        from skymath.pipeline.watch import watch

        stages = watch(run, cfg, view="plain" if args.plain else "auto", interval=args.interval,
                       note="Ctrl-C stops watching; the run goes on")
    else:
        stages = runner.status(run, cfg)
        if args.json:
            print(json.dumps([dataclasses.asdict(s) for s in stages], indent=1))
        else:
            render_status(stages)
    return 0 if all(s.complete for s in stages if not s.service) else 1
