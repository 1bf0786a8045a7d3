"""`skymath cancel RUN [--stage S]`: cancel this run's queued and running Slurm jobs.

Only the job ids in the run's ledger (jobs.jsonl) are touched, never another run's or another
user's jobs: exactly the submissions still pending or running (one scoped squeue), `scancel`
by id. The cancel is recorded in the ledger, so `skymath status` shows the shards as cancelled
(missing), and `skymath resubmit` queues them again.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cancel", help="cancel this run's queued and running Slurm jobs (from its ledger)")
    p.add_argument("run_dir", help="runs/<name>")
    p.add_argument("--stage", action="append", default=None,
                   help="only this stage's jobs (repeatable); its dependents are then cancelled by Slurm")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from skymath.executors.cancel import cancel_run
    from skymath.pipeline import runner

    run, cfg = runner.open_run(args.run_dir)
    cancelled = cancel_run(run, cfg, args.stage)
    if not cancelled:
        print("nothing to cancel: no job of this run is pending or running"
              + (f" in stage(s) {', '.join(args.stage)}" if args.stage else ""))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cancelled in {run.root}")
    for col in ("stage", "role", "job", "shards", "was"):
        table.add_column(col)
    for c in cancelled:
        table.add_row(c.stage, c.role, c.job_id, c.shards, c.state)
    Console().print(table)
    return 0
