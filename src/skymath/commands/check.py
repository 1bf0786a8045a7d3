"""`skymath check CONFIG [--profile P] [-o k=v] [--ping]`: preflight of a Slurm submission.

Exit 0 with a short summary, or exit 2 with ONE table (stage, problem, fix) of everything that
would fail after queueing: resources the cluster rejects (sbatch --test-only on the exact
rendered scripts), limits, the API key, container images, inputs, SFT batch arithmetic, disk.
`skymath run --executor slurm` runs it first (skip with --no-check)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="preflight: find what would fail on the cluster before anything is queued",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="pipeline YAML (e.g. launch/skywork-mistral-7b.yaml)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. -o stages.synth-seed.num_shards=8 (repeatable)")
    p.add_argument("--profile", default=None, help="cluster profile (name in launch/clusters/ or path)")
    p.add_argument("--stage", action="append", default=None, help="only the jobs of these stages (repeatable)")
    p.add_argument("--ping", action="store_true", help="send one 1-token request to each LLM endpoint")
    p.add_argument("--rehearse", action="store_true", help="check the rehearsal of the config (see run --rehearse)")
    p.set_defaults(func=main)


def check_and_report(cfg, profile, run_dir, *, ping: bool = False, stages: list[str] | None = None,
                     out=None) -> int:
    """Run every check, print the table (exit 2) or the summary (exit 0). Used by `run` too."""
    from skymath.preflight import format_table, run_preflight

    out = out or sys.stdout
    res = run_preflight(cfg, profile, run_dir, ping=ping, stages=stages)
    name = f"{cfg.run.name} on profile {profile.name}"
    if not res.ok:
        title = f"skymath check: {len(res.problems)} problem(s) in {name}; nothing was submitted"
        print(format_table(res, title), file=out, end="")
        for note in res.notes:
            print(f"  note: {note}", file=out)
        return 2
    print(f"skymath check: {name}: OK: {res.jobs} job(s), {res.tasks} array task(s); "
          f"sbatch --test-only accepted {res.accepted}/{res.jobs}", file=out)
    for note in res.notes:
        print(f"  {note}", file=out)
    return 0


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from skymath.config import load_config
    from skymath.config.cluster import load_profile

    cfg = load_config(args.config, args.override)
    profile_ref = args.profile or cfg.cluster.profile
    profile = load_profile(profile_ref)
    if args.rehearse:
        from skymath.pipeline.rehearse import format_changes, rehearse_config, rehearse_profile

        cfg, changes = rehearse_config(cfg, profile_ref)
        profile, more = rehearse_profile(profile)
        print(format_changes(changes + more).splitlines()[0])
    cfg.run.root = Path(cfg.run.root).resolve()
    cfg.data.root = Path(cfg.data.root).resolve()
    return check_and_report(cfg, profile, cfg.run_dir, ping=args.ping, stages=args.stage)
