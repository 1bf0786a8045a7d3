"""Local executor (the embedded default): shards as subprocesses of the ONE worker entry point,
in dependency order, with a CPU-slot limit. A failed shard marks its stage failed and its
dependents are never started; rerunning skips complete shards; Ctrl-C / SIGTERM stops the
children cleanly (they keep partial output for resume and never mark it done)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from skymath.config.schema import PipelineConfig
from skymath.pipeline.dag import Pipeline
from skymath.pipeline.procs import process_start, this_host
from skymath.pipeline.rundir import RunDir
from skymath.pipeline.status import LOCAL_STATE_FILE

STOP_GRACE_S = 60.0
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
HEARTBEAT_S = 15.0


@dataclass
class _Proc:
    stage: str
    shard: int
    popen: subprocess.Popen
    slots: int
    log: Path
    started: float
    service: bool = False


def _last_progress_line(path: Path) -> str:
    """The newest line (tqdm writes \\r-separated updates) of a shard log, for the heartbeat."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 2000))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    parts = [p.strip() for p in tail.replace("\r", "\n").split("\n") if p.strip()]
    return parts[-1][:160] if parts else ""


class LocalExecutor:
    def __init__(self, run: RunDir, cfg: PipelineConfig, max_parallel: int | None = None,
                 env: dict[str, str] | None = None, quiet: bool = False, view: str = "plain") -> None:
        self.run = run
        self.cfg = cfg
        self.pipe = Pipeline.from_config(cfg)
        self.max_parallel = max_parallel or cfg.executor.max_parallel
        self.env = {**os.environ, **(env or {})}
        self.quiet = quiet
        self.procs: list[_Proc] = []
        self._stopping = False
        self.view = view  # "auto": the live run table on a terminal (skymath run), "plain": lines only
        self._live = False

    # ---- output ---------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # ---- process control -------------------------------------------------------------------
    def _spawn(self, stage: str, shard: int, service: bool = False) -> _Proc:
        spec = self.cfg.stages[stage]
        log = self.run.log_dir(stage) / f"{self.run.shard_name(shard)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "skymath.worker", str(self.run.root), stage, str(shard)]
        slots = min(spec.resources.cpus, self.max_parallel)
        env = dict(self.env)
        # one BLAS/OpenMP thread per CPU slot: oversubscribed torch threads on a busy machine
        # slow generation and training down 5x (Slurm jobs get the same from cpus-per-task)
        for var in THREAD_VARS:
            env.setdefault(var, str(slots))
        with open(log, "ab") as lf:
            lf.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            popen = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, stdin=subprocess.DEVNULL)
        p = _Proc(stage, shard, popen, slots, log, time.monotonic(), service)
        self.procs.append(p)
        self.run.append_ledger({"executor": "local", "event": "start", "stage": stage, "shard": shard,
                                "pid": popen.pid, "log": str(log)})
        return p

    def _signal(self, p: _Proc, sig: int) -> None:
        try:
            os.killpg(p.popen.pid, sig)
        except ProcessLookupError:
            pass

    def _stop_service(self, name: str) -> None:
        svc_dir = self.run.service_dir(name)
        svc_dir.mkdir(parents=True, exist_ok=True)
        (svc_dir / "STOP").write_text("stop\n")
        for p in self.procs:
            if p.stage == name:
                self._signal(p, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in [p for p in self.procs if p.stage == name]:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(p, signal.SIGKILL)
                p.popen.wait()
            self.procs.remove(p)
        self.say(f"service {name} stopped")

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        """Forward a stop to every child, wait for them, then kill stragglers."""
        for p in self.procs:
            self._signal(p, sig)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in list(self.procs):
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(p, signal.SIGKILL)
                p.popen.wait()
        self.procs.clear()

    def check_stages(self, stages: list[str] | None) -> None:
        """A typo in --stage is an error, never "all 0 stage(s) complete"."""
        self.pipe.check_names(stages, str(self.run.config_path))

    def _write_state(self, state: dict[str, str]) -> None:
        """`local-executor.json`: who runs this run and each stage's state, so `skymath status`
        in another terminal shows queued shards as pending (removed when the executor ends)."""
        info = {"pid": os.getpid(), "host": this_host(), "pid_start": process_start(os.getpid()),
                "started": self._started, "updated": time.time(), "stages": state}
        tmp = self.run.root / f".{LOCAL_STATE_FILE}.tmp{os.getpid()}"
        try:
            tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
            os.replace(tmp, self.run.root / LOCAL_STATE_FILE)
        except OSError:
            tmp.unlink(missing_ok=True)

    # ---- scheduling -----------------------------------------------------------------------------
    def launch(self, stages: list[str] | None = None, dry_run: bool = False) -> int:
        self.check_stages(stages)
        if not dry_run and not self.quiet and self.view != "plain":
            from skymath.pipeline.watch import live_view, resolve_view

            if resolve_view(self.view) == "live":  # type: ignore[arg-type]
                self._live = True
                try:
                    with live_view(self.run, self.cfg, interval=max(2.0, self.cfg.executor.poll_s),
                                   note="Ctrl-C stops the run; rerun the same command to resume"):
                        return self._launch(stages, dry_run)
                finally:
                    self._live = False
        return self._launch(stages, dry_run)

    def _launch(self, stages: list[str] | None, dry_run: bool) -> int:
        selected = [s for s in self.pipe.order if stages is None or s in stages]
        services = [s for s in selected if self.pipe.is_service(s)]
        work = [s for s in selected if s not in services]
        # services needed by the selected work stages come along even if not named
        for s in work:
            for svc in self.cfg.stages[s].services:
                if svc not in services:
                    services.append(svc)
        todo = {s: self.run.missing_shards(s, self.cfg.stages[s].num_shards) for s in work}
        if dry_run:
            for s in work:
                spec = self.cfg.stages[s]
                print(f"{s}: kind={spec.kind} shards to run {todo[s] or 'none (complete)'}"
                      f" after {spec.depends_on or '-'} services {spec.services or '-'}")
            return 0

        state = {s: ("done" if not todo[s] else "waiting") for s in work}
        queue: list[tuple[str, int]] = []
        failed_shards: dict[str, list[int]] = {}
        svc_running: set[str] = set()
        t_last_beat = time.monotonic()
        for s in work:
            if state[s] == "done":
                self.say(f"{s}: complete, skipped")

        prev_handlers = {}
        self._started = time.time()
        written: dict[str, str] = {}

        def on_signal(signum, _frame):
            self._stopping = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            prev_handlers[sig] = signal.signal(sig, on_signal)
        try:
            while True:
                if self._stopping:
                    self.say("stopping: forwarding SIGTERM to running shards ...")
                    self.stop_all()
                    self.say("stopped; rerun the same command to resume (complete shards are skipped)")
                    return 143
                if state != written:
                    self._write_state(state)
                    written = dict(state)
                # 1. stages whose parents are complete become ready; parents failed -> blocked
                for s in work:
                    if state[s] != "waiting":
                        continue
                    parents = self.cfg.stages[s].depends_on
                    bad = [p for p in parents if state.get(p) in ("failed", "blocked")
                           or (p not in state and not self.run.stage_complete(p, self.cfg.stages[p].num_shards))]
                    if bad:
                        state[s] = "blocked"
                        self.say(f"{s}: not started (parent {', '.join(bad)} failed or incomplete)")
                        continue
                    if all(state.get(p, "done") == "done" for p in parents):
                        state[s] = "running"
                        queue.extend((s, i) for i in todo[s])
                        # critical path first: shards of stages with more stages after them
                        queue.sort(key=lambda q: -len(self.pipe.descendants(q[0])))
                        self.say(f"{s}: starting {len(todo[s])}/{self.cfg.stages[s].num_shards} shard(s)")
                # 2. services: up while a consumer is running, down when all consumers finished
                for svc in services:
                    consumers = [c for c in work if svc in self.cfg.stages[c].services]
                    active = any(state[c] == "running" for c in consumers)
                    if active and svc not in svc_running:
                        (self.run.service_dir(svc) / "STOP").unlink(missing_ok=True)
                        for i in range(self.cfg.stages[svc].num_shards):
                            self._spawn(svc, i, service=True)
                        svc_running.add(svc)
                        self.say(f"service {svc}: starting {self.cfg.stages[svc].num_shards} server(s)")
                    elif not active and svc in svc_running and all(state[c] != "waiting" for c in consumers):
                        self._stop_service(svc)
                        svc_running.discard(svc)
                # 3. start queued shards while CPU slots are free
                used = sum(p.slots for p in self.procs if not p.service)
                while queue:
                    s, i = queue[0]
                    need = min(self.cfg.stages[s].resources.cpus, self.max_parallel)
                    if used and used + need > self.max_parallel:
                        break
                    queue.pop(0)
                    self._spawn(s, i)
                    used += need
                # 4. reap finished shards
                for p in [p for p in self.procs if not p.service and p.popen.poll() is not None]:
                    self.procs.remove(p)
                    rc = p.popen.returncode
                    dt = time.monotonic() - p.started
                    self.run.append_ledger({"executor": "local", "event": "end", "stage": p.stage,
                                            "shard": p.shard, "rc": rc, "seconds": round(dt, 2)})
                    if rc == 0 and self.run.is_done(p.stage, p.shard):
                        self.say(f"{p.stage}[{p.shard}] done ({dt:.0f}s)")
                    else:
                        failed_shards.setdefault(p.stage, []).append(p.shard)
                        err = (self.run.read_marker(self.run.failed_path(p.stage, p.shard)) or {}).get("error", "")
                        self.say(f"{p.stage}[{p.shard}] FAILED rc={rc}: {err} (log {p.log})")
                for p in [p for p in self.procs if p.service and p.popen.poll() is not None]:
                    self.procs.remove(p)
                    self.say(f"service {p.stage}[{p.shard}] exited rc={p.popen.returncode} (log {p.log})")
                # 5. stage completion
                for s in work:
                    if state[s] == "running" and not any(q[0] == s for q in queue) \
                            and not any(p.stage == s for p in self.procs):
                        if self.run.stage_complete(s, self.cfg.stages[s].num_shards):
                            state[s] = "done"
                            self.say(f"{s}: complete")
                        else:
                            state[s] = "failed"
                            self.say(f"{s}: FAILED (shards {sorted(failed_shards.get(s, []))}); see the log(s) "
                                     f"above, fix the cause and run `skymath resubmit {self.run.root}` "
                                     "(a fix in the config: `skymath run CONFIG --reconfigure`)")
                if not queue and not any(not p.service for p in self.procs) \
                        and not any(v == "waiting" for v in state.values()):
                    break
                if not self._live and time.monotonic() - t_last_beat > HEARTBEAT_S:
                    t_last_beat = time.monotonic()
                    for p in self.procs:
                        if not p.service:
                            self.say(f"  {p.stage}[{p.shard}] {time.monotonic() - p.started:.0f}s "
                                     f"| {_last_progress_line(p.log)}")
                time.sleep(self.cfg.executor.poll_s)
        finally:
            for svc in list(svc_running):
                self._stop_service(svc)
            for sig, h in prev_handlers.items():
                signal.signal(sig, h)
            (self.run.root / LOCAL_STATE_FILE).unlink(missing_ok=True)
        bad = [s for s in work if state[s] != "done"]
        if bad:
            self.say(f"incomplete stages: {', '.join(f'{s} ({state[s]})' for s in bad)}")
            return 1
        self.say(f"all {len(work)} stage(s) complete: {self.run.root}")
        return 0

    def resubmit(self, stage: str | None = None) -> int:
        """Rerun exactly the missing/failed shards of `stage` (or of every stage), then its dependents."""
        stages = None if stage is None else [stage, *self.pipe.descendants(stage)]
        return self.launch(stages)
