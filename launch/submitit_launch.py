#!/usr/bin/env python
"""Submit a pipeline from Python (the former submitit entry point), on the ONE planner.

    python launch/submitit_launch.py launch/demo.yaml --profile local [--stage S] [--dry-run] [--wait]

Exactly what `skymath run --executor slurm` submits: the same planned jobs, rendered scripts,
dependencies, services, ledger. The submitit executor itself was removed (issue 12): submitit
writes its own sbatch script around a pickled function and handles USR2/requeue its own way, so
it dropped gpu-multinode, containers, per-shape options, gres and the requeue trap. To drive a
run from your own Python code, do what main() does below:

    run, cfg = runner.prepare_run("launch/demo.yaml", executor="slurm")
    ex = SlurmExecutor(run, cfg, load_profile("local"))
    for job in ex.plan():             # nothing submitted: inspect job.script, job.dependency
        print(job.stage, job.role, job.shards, job.script)
    ex.launch()                       # submit
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from skymath.config.cluster import load_profile
    from skymath.errors import UserError
    from skymath.executors.slurm import SlurmExecutor
    from skymath.pipeline import runner

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--profile", default=None, help="cluster profile name or path (default: cluster.profile)")
    ap.add_argument("--stage", action="append", default=None)
    ap.add_argument("--dry-run", action="store_true", help="render the scripts, submit nothing")
    ap.add_argument("--wait", action="store_true", help="block until the jobs have finished")
    ap.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    args = ap.parse_args(argv)
    try:
        run, cfg = runner.prepare_run(args.config, args.override, executor="slurm")
        ex = SlurmExecutor(run, cfg, load_profile(args.profile or cfg.cluster.profile))
        rc = ex.launch(args.stage, dry_run=args.dry_run)
        if args.wait and rc == 0 and not args.dry_run:
            st = runner.wait(run, cfg, poll_s=2.0, timeout_s=args.timeout)
            return 0 if all(s.complete for s in st if not s.service) else 1
        return rc
    except UserError as e:
        print(f"skymath: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
