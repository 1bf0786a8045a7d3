"""`skymath resubmit RUN [--stage S]`: rerun exactly the failed or missing shards, re-chain dependents."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resubmit", help="rerun exactly the failed/missing shards (and the stages after them)")
    p.add_argument("run_dir")
    p.add_argument("--stage", default=None, help="only this stage (and its dependents)")
    p.add_argument("--executor", choices=["local", "slurm", "submitit"], default=None,
                   help="default: the executor that launched the run")
    p.add_argument("--profile", default=None)
    p.add_argument("--wait", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from skymath.errors import UserError
    from skymath.executors import get_executor, require_scheduler
    from skymath.pipeline import runner

    run, cfg = runner.open_run(args.run_dir)
    if args.stage and args.stage not in cfg.stages:
        raise UserError(f"{run.config_path}: no stage {args.stage!r} (stages: {', '.join(cfg.stages)})")
    kind = args.executor or runner.ledger_executor(run)
    opts = {"profile": args.profile} if args.profile and kind != "local" else {}
    require_scheduler(kind)
    ex = get_executor(kind, run, cfg, **opts)
    rc = ex.resubmit(args.stage)
    if kind != "local" and args.wait and rc == 0:
        st = runner.wait(run, cfg)
        return 0 if all(s.complete for s in st if not s.service) else 1
    return rc
