"""The ONE entry point that runs a shard, locally or inside a Slurm job:

    python -m skymath.worker RUN_DIR STAGE SHARD
    python -m skymath.worker RUN_DIR STAGE @shards.txt   # Slurm array: line $SLURM_ARRAY_TASK_ID

Exit codes: 0 done (or already done), 1 stage error, 2 bad input, 3 shard already running
elsewhere, 143 stopped by SIGTERM/SIGUSR2 (nothing half-written is marked done).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from skymath.errors import StageFailed, UserError
from skymath.pipeline.context import ShardContext
from skymath.pipeline.rundir import RunDir

EXIT_STOPPED = 143
EXIT_BUSY = 3


class Stopped(BaseException):
    """Raised in the main thread on SIGTERM/SIGUSR2 for stages that do not poll the stop flag."""


def resolve_shard(arg: str) -> int:
    """An int, or `@FILE` whose line number $SLURM_ARRAY_TASK_ID (0-based) holds the shard."""
    if arg.startswith("@"):
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        if task is None:
            raise UserError(f"shard list {arg[1:]} given but SLURM_ARRAY_TASK_ID is not set")
        lines = [ln.strip() for ln in Path(arg[1:]).read_text().splitlines() if ln.strip()]
        idx = int(task)
        if not 0 <= idx < len(lines):
            raise UserError(f"{arg[1:]}: array task {idx} out of range (file has {len(lines)} shards)")
        return int(lines[idx])
    try:
        return int(arg)
    except ValueError:
        raise UserError(f"shard must be an integer or @FILE, got {arg!r}") from None


def run_shard(run_root: str | Path, stage: str, shard: int, force: bool = False) -> int:
    from skymath.stages import stage_module

    run = RunDir(run_root)
    cfg = run.load_config()
    if stage not in cfg.stages:
        raise UserError(f"{run.config_path}: no stage {stage!r} (stages: {', '.join(cfg.stages)})")
    spec = cfg.stages[stage]
    if not 0 <= shard < spec.num_shards:
        raise UserError(f"stage {stage}: shard {shard} out of range 0..{spec.num_shards - 1}")
    mod = stage_module(spec.kind)
    service = getattr(mod, "SERVICE", False)
    if run.is_done(stage, shard) and not force and not service:
        print(f"[skymath] {stage}[{shard}] already done", file=sys.stderr)
        return 0

    # under torchrun every rank runs this worker: only rank 0 holds the shard lock and writes markers
    rank = int(os.environ.get("RANK", "0"))
    lock_path = run.shard_path(stage, shard, ".lock" if rank == 0 else f".lock.rank{rank}")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock_f = open(lock_path, "a")
    try:
        fcntl.flock(lock_f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"[skymath] {stage}[{shard}] is already running in another process", file=sys.stderr)
        return EXIT_BUSY

    ctx = ShardContext(run=run, config=cfg, stage_name=stage, shard=shard)
    ctx.start_progress()  # progress file (+ heartbeat): running, pid, host, records (skymath status)
    cooperative = getattr(mod, "COOPERATIVE_STOP", False)
    main_thread = threading.main_thread()

    def on_signal(signum, _frame):
        print(f"[skymath] {stage}[{shard}] got {signal.Signals(signum).name}: stopping", file=sys.stderr, flush=True)
        ctx.stop_event.set()
        if not cooperative and threading.current_thread() is main_thread:
            raise Stopped(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, on_signal)

    job = {k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID") if k in os.environ}
    t0 = time.time()
    print(f"[skymath] {stage}[{shard}/{spec.num_shards}] start on {socket.gethostname()} pid {os.getpid()}",
          file=sys.stderr, flush=True)
    from skymath.synth import accounting  # every LLM client of this shard reports its usage here

    accounting.begin_shard()

    def stopped(why: str) -> int:
        """Partial output kept, exit 143: the template requeues the job and the shard resumes."""
        for w in ctx.writers:
            w.abort()
        if rank == 0:
            run.mark_failed(stage, shard, f"stopped by {why}", **job)
        print(f"[skymath] {stage}[{shard}] stopped; partial output kept for resume", file=sys.stderr, flush=True)
        return EXIT_STOPPED

    try:
        meta = mod.run(ctx) or {}
        # a cooperative stage returns early on a stop; one that finished all its work anyway (inside
        # the signal lead) says `complete`, and its shard is done: exit 0, no requeue of finished work
        finished = bool(meta.pop("complete", False))
        if ctx.stop_requested() and not service and not finished:
            raise Stopped("stop requested")
        info: dict = {}
        for w in ctx.writers:
            if not w.closed:
                w.close()
            info.setdefault("records", 0)
            info["records"] += w.meta.get("records", 0)
            info.setdefault("files", []).append({"file": w.path.name, "sha256": w.meta["sha256"], "records": w.meta["records"]})
        info.update(meta)
        accounting.attach_usage(info)  # API usage of a stage that did not report it (judges, ...)
        info.update({"seconds": round(time.time() - t0, 3), "host": socket.gethostname(), **job})
        if service:
            print(f"[skymath] {stage}[{shard}] service stopped", file=sys.stderr)
            return 0
        if rank != 0:
            return 0
        run.mark_done(stage, shard, info)
        after = getattr(mod, "after_shard_done", None)
        if after is not None:
            with run.stage_lock(stage):
                after(ctx)
        print(f"[skymath] {stage}[{shard}] done in {time.time() - t0:.1f}s "
              f"({info.get('records', 0)} records)", file=sys.stderr, flush=True)
        return 0
    except Stopped as e:
        return stopped(str(e))
    except UserError as e:
        for w in ctx.writers:
            w.abort()
        if rank == 0:
            run.mark_failed(stage, shard, str(e), **job)
        print(f"skymath: error: {e}", file=sys.stderr, flush=True)
        return 2
    except StageFailed as e:  # a failure the stage has explained in one line (no traceback)
        if ctx.stop_requested() and not service:  # e.g. requests cut off by the stop: not a failure
            return stopped(f"a stop request ({e})")
        for w in ctx.writers:
            w.abort()
        if rank == 0:
            run.mark_failed(stage, shard, str(e), **job)
        print(f"skymath: error: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - record any stage failure in the marker
        if ctx.stop_requested() and not service:
            return stopped(f"a stop request ({type(e).__name__}: {e})")
        for w in ctx.writers:
            w.abort()
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        if rank == 0:
            run.mark_failed(stage, shard, f"{type(e).__name__}: {e}", traceback=tb[-4000:], **job)
        return 1
    finally:
        ctx.finish_progress("ended")
        lock_f.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m skymath.worker", description="Run one shard of one stage.")
    ap.add_argument("run_dir")
    ap.add_argument("stage")
    ap.add_argument("shard", help="shard index, or @FILE (Slurm array: line $SLURM_ARRAY_TASK_ID)")
    ap.add_argument("--force", action="store_true", help="rerun even if the shard is done")
    args = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SKYMATH_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        shard = resolve_shard(args.shard)
        return run_shard(args.run_dir, args.stage, shard, force=args.force)
    except UserError as e:
        print(f"skymath: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # run through the importable module so `skymath.worker.Stopped` raised by a stage is this class
    from skymath.worker import main as _main

    sys.exit(_main())
