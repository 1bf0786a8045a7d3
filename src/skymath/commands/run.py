"""`skymath run CONFIG [--executor local|slurm|submitit] [-o key=value] [--dry-run]`."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run (or submit) a pipeline; complete shards are skipped")
    p.add_argument("config", help="pipeline YAML (e.g. launch/demo.yaml)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. -o stages.synth.num_shards=64 (repeatable)")
    p.add_argument("--executor", choices=["local", "slurm", "submitit"], default=None,
                   help="default: executor.kind from the config (local)")
    p.add_argument("--profile", default=None, help="cluster profile (name in launch/clusters/ or path)")
    p.add_argument("--stage", action="append", default=None, help="only these stages (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="render/print what would run, submit nothing")
    p.add_argument("--no-check", action="store_true", help="slurm: submit without the preflight (skymath check)")
    p.add_argument("--rehearse", action="store_true",
                   help="run this config scaled down (tiny model, local LLM server, capped shards) as <name>-rehearsal")
    p.add_argument("--wait", action="store_true", help="slurm/submitit: block until the jobs finish")
    p.add_argument("--no-watch", action="store_true",
                   help="one line per change instead of the live run table (the default off a terminal)")
    p.add_argument("--reconfigure", action="store_true", help="replace the frozen config of an existing run")
    p.add_argument("--max-parallel", type=int, default=None, help="local: CPU slots (default executor.max_parallel)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from skymath.executors import get_executor, require_scheduler
    from skymath.pipeline import runner
    from skymath.pipeline.dag import Pipeline

    # a dry run freezes nothing; a real one checks the scheduler before writing the run directory
    run, cfg = runner.prepare_run(args.config, args.override, args.reconfigure, args.executor, freeze=False)
    if args.rehearse:  # the same preset, scaled down (pipeline/rehearse.py prints what it changes)
        from skymath.pipeline.rehearse import rehearse_run

        run, cfg = rehearse_run(cfg, args.profile, dry_run=args.dry_run)
        args.profile = cfg.cluster.profile  # the rehearsal's profile, written into the run dir
    kind = cfg.executor.kind
    Pipeline.from_config(cfg).check_names(args.stage, str(args.config))
    if not args.dry_run:
        require_scheduler(kind)
    opts: dict = {}
    if kind == "local":
        opts["max_parallel"] = args.max_parallel
        opts["view"] = "plain" if args.no_watch else "auto"
    elif args.profile:
        opts["profile"] = args.profile
    ex = get_executor(kind, run, cfg, **opts)
    if kind == "slurm" and not args.dry_run and not args.no_check:  # preflight: nothing is queued on a problem
        from skymath.commands.check import check_and_report

        if check_and_report(cfg, ex.profile, run.root, stages=args.stage, out=sys.stderr) != 0:
            return 2
    if not args.dry_run:
        runner.freeze_run(run, cfg, args.config, args.reconfigure)
    elif not args.reconfigure and runner.frozen_config_differs(run, cfg):
        print(f"note: {run.root} was started with a different config; running this one needs --reconfigure",
              file=sys.stderr)
    rc = ex.launch(args.stage, dry_run=args.dry_run)
    if kind != "local" and args.wait and not args.dry_run and rc == 0:
        st = runner.wait(run, cfg, view="plain" if args.no_watch else "auto")
        return 0 if all(s.complete for s in st if not s.service) else 1
    return rc
