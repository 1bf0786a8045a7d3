"""`skymath status RUN`: per stage, shards done / running / pending / failed / missing."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="per-stage shard states of a run (markers + squeue/sacct)")
    p.add_argument("run_dir", help="runs/<name>")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from skymath.pipeline import runner
    from skymath.pipeline.status import render_status

    run, cfg = runner.open_run(args.run_dir)
    stages = runner.status(run, cfg)
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in stages], indent=1))
    else:
        render_status(stages)
    return 0 if all(s.complete for s in stages if not s.service) else 1
