"""`skymath report RUN [--compare RUN ...]`: tables (markdown + CSV) and plots for a run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables and plots of a run's evaluations (+ scaling curve across runs)",
                       description="Write RUN/report/: report.md, one CSV per table, PNG plots, and a run summary.")
    p.add_argument("run", help="run directory (or a run name under runs/)")
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN",
                   help="more runs (e.g. trained on different SFT sample counts) for the data-scaling curve")
    p.add_argument("--out", default=None, help="output directory (default RUN/report)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from skymath.evaluate.report import write_report

    path = write_report(args.run, args.compare, args.out)
    print(path.read_text(encoding="utf-8"))
    print(f"report written to {path}")
    return 0
