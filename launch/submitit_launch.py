#!/usr/bin/env python
"""Submit a pipeline through submitit (Python API) instead of rendered sbatch scripts.

    python launch/submitit_launch.py launch/demo.yaml --profile local [--stage S] [--wait]

Same stages, markers and run directory as `skymath run --executor slurm`; `skymath status`
and `skymath resubmit` work on the run afterwards.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from skymath.config.cluster import load_profile
    from skymath.errors import UserError
    from skymath.executors.submitit_exec import SubmititExecutor
    from skymath.pipeline import runner

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--profile", default=None, help="cluster profile name or path (default: cluster.profile)")
    ap.add_argument("--stage", action="append", default=None)
    ap.add_argument("--wait", action="store_true", help="block until the jobs have finished")
    ap.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    args = ap.parse_args(argv)
    try:
        run, cfg = runner.prepare_run(args.config, args.override, executor="submitit")
        ex = SubmititExecutor(run, cfg, load_profile(args.profile or cfg.cluster.profile))
        rc = ex.launch(args.stage)
        if args.wait and rc == 0:
            st = runner.wait(run, cfg, poll_s=2.0, timeout_s=args.timeout)
            return 0 if all(s.complete for s in st if not s.service) else 1
        return rc
    except UserError as e:
        print(f"skymath: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
