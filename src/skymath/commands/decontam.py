"""`skymath decontam`: n-gram decontamination of any JSONL files against benchmark test sets."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    ap = sub.add_parser(
        "decontam", help="drop samples sharing a word n-gram with benchmark test sets",
        description="Writes DIR/kept.jsonl, DIR/removed.jsonl (with benchmark, test id, matching n-gram) "
                    "and DIR/summary.json. A sample's problem is its `problem` (or `question`) field, its "
                    "response the first of `response`, `solution`, `answer`.")
    ap.add_argument("inputs", nargs="+", type=Path, metavar="INPUT.jsonl")
    ap.add_argument("--n", type=int, default=30, help="n-gram length in words (default 30)")
    ap.add_argument("--benchmark", action="append", metavar="NAME|NAME=PATH",
                    help="gsm8k, math, math500, or NAME=PATH of a JSONL test set (repeatable; default gsm8k + math)")
    ap.add_argument("--out", type=Path, required=True, metavar="DIR")
    ap.add_argument("--data-root", type=Path, default=None, help="where built-in benchmark files are")
    ap.add_argument("--no-exact-problem", action="store_true",
                    help="only the n-gram rule (skip: problem's words equal a test problem's)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.set_defaults(func=main)


def _spec(arg: str):
    from skymath.decontam.benchmarks import BenchmarkSpec

    if "=" not in arg:
        return arg
    name, path = arg.split("=", 1)
    from skymath.records import read_jsonl

    first = next(iter(read_jsonl(Path(path))), {})
    prob = "problem" if "problem" in first else "question"
    sol = next((k for k in ("solution", "answer", "response") if k in first), None)
    ident = next((k for k in ("unique_id", "id") if k in first), None)
    return BenchmarkSpec(name=name, path=path, problem_field=prob, solution_field=sol, id_field=ident)


def _texts(row: dict) -> tuple[str | None, str | None]:
    problem = row.get("problem", row.get("question"))
    response = next((row[k] for k in ("response", "solution", "answer") if row.get(k)), None)
    return (None if problem is None else str(problem)), (None if response is None else str(response))


def main(args: argparse.Namespace) -> int:
    import json
    import os
    import sys
    from collections import Counter

    from tqdm import tqdm

    from skymath.decontam.filter import Decontaminator
    from skymath.errors import UserError
    from skymath.paths import cache_root, default_data_root
    from skymath.records import atomic_write_text, read_jsonl

    if args.n < 1:
        raise UserError(f"--n: must be >= 1, got {args.n}")
    for p in args.inputs:
        if not p.is_file():
            raise UserError(f"{p}: input file not found")
    benchmarks = [_spec(b) for b in (args.benchmark or ["gsm8k", "math"])]
    dec = Decontaminator.from_benchmarks(benchmarks, args.n, args.data_root or default_data_root(),
                                         cache_dir=cache_root() / "decontam",
                                         exact_problem=not args.no_exact_problem)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {k: args.out / f"{k}.jsonl" for k in ("kept", "removed")}
    tmps = {k: p.with_name(f".{p.name}.tmp{os.getpid()}") for k, p in paths.items()}
    files = {k: open(t, "w", encoding="utf-8") for k, t in tmps.items()}
    counts: Counter[str] = Counter()
    by_bench: Counter[str] = Counter()

    def rows():
        for path in args.inputs:
            yield from read_jsonl(path)

    try:
        bar = tqdm(desc="decontam", unit="rec", file=sys.stderr, mininterval=1.0, ascii=True)
        for row, m in dec.filter(rows(), args.batch_size, get=_texts):
            bar.update(1)
            if m is None:
                counts["kept"] += 1
                files["kept"].write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                counts["removed"] += 1
                by_bench[m.benchmark] += 1
                files["removed"].write(json.dumps({**row, "decontam": m.to_dict()}, ensure_ascii=False) + "\n")
        bar.close()
    finally:
        for f in files.values():
            f.close()
    for k in paths:
        os.replace(tmps[k], paths[k])
    summary = {"input": counts["kept"] + counts["removed"], "kept": counts["kept"], "removed": counts["removed"],
               "removed_by_benchmark": dict(by_bench), "n": args.n,
               "benchmarks": [b if isinstance(b, str) else b.name for b in benchmarks],
               "inputs": [str(p) for p in args.inputs]}
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(f"decontam: {summary['input']} samples, kept {summary['kept']}, removed {summary['removed']} "
          f"{dict(by_bench)} -> {args.out}")
    return 0
