"""`skymath run CONFIG [--executor local|slurm|submitit] [-o key=value] [--dry-run]`."""

from __future__ import annotations

import argparse


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
    p.add_argument("--wait", action="store_true", help="slurm/submitit: block until the jobs finish")
    p.add_argument("--reconfigure", action="store_true", help="replace the frozen config of an existing run")
    p.add_argument("--max-parallel", type=int, default=None, help="local: CPU slots (default executor.max_parallel)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from skymath.executors import get_executor
    from skymath.pipeline import runner

    run, cfg = runner.prepare_run(args.config, args.override, args.reconfigure, args.executor)
    kind = cfg.executor.kind
    opts: dict = {}
    if kind == "local":
        opts["max_parallel"] = args.max_parallel
    elif args.profile:
        opts["profile"] = args.profile
    ex = get_executor(kind, run, cfg, **opts)
    rc = ex.launch(args.stage, dry_run=args.dry_run)
    if kind != "local" and args.wait and not args.dry_run and rc == 0:
        st = runner.wait(run, cfg)
        return 0 if all(s.complete for s in st if not s.service) else 1
    return rc
