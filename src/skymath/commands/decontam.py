"""`skymath decontam`: n-gram decontamination of any JSONL files against benchmark test sets."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    ap = sub.add_parser(
        "decontam", help="drop samples sharing a word n-gram with benchmark test sets",
        description="Writes DIR/kept.jsonl, DIR/removed.jsonl (with benchmark, test id, matching n-gram), "
                    "DIR/quarantine.jsonl (input lines that are not JSON objects: file, line, reason) "
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
    from skymath.errors import UserError

    if "=" not in arg:
        return arg
    name, path = arg.split("=", 1)
    first = next(iter(read_input_rows(Path(path), _Quarantine(None))), None)
    if first is None:
        raise UserError(f"--benchmark {name}={path}: no JSON object in the file")
    prob = "problem" if "problem" in first else "question"
    sol = next((k for k in ("solution", "answer", "response") if k in first), None)
    ident = next((k for k in ("unique_id", "id") if k in first), None)
    return BenchmarkSpec(name=name, path=path, problem_field=prob, solution_field=sol, id_field=ident)


class _Quarantine:
    """Bad input lines, kept (file, line, reason, text) in a file under --out, never beside the input."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        self._f = None

    def add(self, file: Path, lineno: int, reason: str, raw: bytes) -> None:
        import json

        self.count += 1
        if self.path is None:
            return
        if self._f is None:
            self._f = open(self.path, "w", encoding="utf-8")
        text = raw[:10000].decode("utf-8", errors="replace")
        self._f.write(json.dumps({"file": str(file), "line": lineno, "reason": reason, "text": text},
                                 ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def read_input_rows(path: Path, quarantine: _Quarantine, head_only: bool = False):
    """JSON objects of a (gzipped) JSONL file. A binary file is a UserError; a bad line (invalid
    UTF-8 or JSON, not an object) goes to the quarantine and reading goes on."""
    import gzip
    import json
    import zlib

    from skymath.errors import UserError

    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a JSONL file")
    if not path.is_file():
        raise UserError(f"{path}: input file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    valid, bad_before = 0, quarantine.count
    try:
        with opener(path, "rb") as f:
            head = f.read(8192)
            nul = head.find(b"\0")
            if nul >= 0:
                raise UserError(f"{path}: not a JSONL text file (binary data at byte {nul})")
            if head_only:
                return
            f.seek(0)
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    quarantine.add(path, lineno, f"invalid UTF-8 at byte {e.start}", raw)
                    continue
                except json.JSONDecodeError as e:
                    quarantine.add(path, lineno, f"invalid JSON: {e.msg} at column {e.colno}", raw)
                    continue
                if not isinstance(obj, dict):
                    quarantine.add(path, lineno, f"not a JSON object ({type(obj).__name__})", raw)
                    continue
                valid += 1
                yield obj
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path}: not a readable gzip file ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    if valid == 0 and quarantine.count > bad_before:
        raise UserError(f"{path}: no valid JSON line ({quarantine.count - bad_before} bad lines); is it JSONL?")


def _texts(row: dict) -> tuple[str | None, str | None]:
    problem = row.get("problem", row.get("question"))
    response = next((row[k] for k in ("response", "solution", "answer") if row.get(k)), None)
    return (None if problem is None else str(problem)), (None if response is None else str(response))


def main(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import os
    import sys
    from collections import Counter

    from tqdm import tqdm

    from skymath.decontam.filter import Decontaminator
    from skymath.errors import UserError
    from skymath.paths import cache_root, default_data_root
    from skymath.records import atomic_write_text

    if args.n < 1:
        raise UserError(f"--n: must be >= 1, got {args.n}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {args.batch_size}")
    for p in args.inputs:  # before anything is written: a missing or binary input is a one-line error
        next(iter(read_input_rows(p, _Quarantine(None), head_only=True)), None)
    benchmarks = [_spec(b) for b in (args.benchmark or ["gsm8k", "math"])]
    dec = Decontaminator.from_benchmarks(benchmarks, args.n, args.data_root or default_data_root(),
                                         cache_dir=cache_root() / "decontam",
                                         exact_problem=not args.no_exact_problem)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a directory")
    created = not args.out.exists()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {args.out}: cannot create the output directory: {e.strerror or e}") from None
    names = ("kept", "removed", "quarantine")
    paths = {k: args.out / f"{k}.jsonl" for k in names}
    tmps = {k: p.with_name(f".{p.name}.tmp{os.getpid()}") for k, p in paths.items()}
    counts: Counter[str] = Counter()
    by_bench: Counter[str] = Counter()
    quarantine = _Quarantine(tmps["quarantine"])
    files = {}
    try:
        files = {k: open(tmps[k], "w", encoding="utf-8") for k in ("kept", "removed")}

        def rows():
            for path in args.inputs:
                yield from read_input_rows(path, quarantine)

        bar = tqdm(desc="decontam", unit="rec", file=sys.stderr, mininterval=1.0, ascii=True, delay=2.0)
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
        for f in files.values():
            f.close()
        quarantine.close()
        for k in ("kept", "removed"):
            os.replace(tmps[k], paths[k])
        if quarantine.count:
            os.replace(tmps["quarantine"], paths["quarantine"])
        else:
            paths["quarantine"].unlink(missing_ok=True)  # an old run's quarantine is not this run's
    except BaseException:
        for f in files.values():
            f.close()
        quarantine.close()
        for t in tmps.values():
            t.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                args.out.rmdir()  # only if empty: this run made it and wrote nothing
        raise
    summary = {"input": counts["kept"] + counts["removed"], "kept": counts["kept"], "removed": counts["removed"],
               "removed_by_benchmark": dict(by_bench), "quarantined": quarantine.count,
               "quarantine_file": str(paths["quarantine"]) if quarantine.count else None, "n": args.n,
               "benchmarks": [b if isinstance(b, str) else b.name for b in benchmarks],
               "inputs": [str(p) for p in args.inputs]}
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    bad = f", quarantined {quarantine.count} bad line(s) -> {paths['quarantine']}" if quarantine.count else ""
    print(f"decontam: {summary['input']} samples, kept {summary['kept']}, removed {summary['removed']} "
          f"{dict(by_bench)}{bad} -> {args.out}")
    return 0
