"""`skymath status RUN --watch` and `skymath run … --wait`: the whole run as one view, refreshed.

Each refresh reads the markers and the shards' progress files (done shards are cached, so a
1,024-shard stage costs one directory listing plus the running shards' files) and, for Slurm
runs, asks the scheduler ONCE (one scoped squeue). Two renderings of the same numbers:

* live (a terminal): a rich table redrawn in place;
* plain (logs, pipes, `--no-watch`): one line per stage whose numbers changed, so a log of a
  week-long run stays readable.

A scheduler that does not answer shows its shards as `unknown` and the watch goes on: only a
run with nothing running, pending or unknown ends the wait.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Literal

from skymath.config.schema import PipelineConfig
from skymath.errors import UserError
from skymath.pipeline.rundir import RunDir
from skymath.pipeline.status import (
    StageStatus,
    StatusCache,
    failure_lines,
    fmt_count,
    fmt_duration,
    status_table,
)

View = Literal["auto", "live", "plain"]
PLAIN_HEARTBEAT_S = 60.0  # plain mode: a stage whose records grow gets a line at most this often


def resolve_view(view: View, stream: IO[str] | None = None) -> Literal["live", "plain"]:
    """`auto` is live on a terminal and plain otherwise (CI logs, `| tee`, Slurm batch output)."""
    if view != "auto":
        return view
    s = stream or sys.stdout
    return "live" if hasattr(s, "isatty") and s.isatty() else "plain"


def is_idle(stages: list[StageStatus]) -> bool:
    return not any(st.active for st in stages)


def stage_line(st: StageStatus) -> str:
    """One plain-text line of a stage: shard states, then the numbers."""
    counts = (f"{st.count('done')}/{st.num_shards} done, {st.count('running')} running, "
              f"{st.count('pending')} pending, {st.count('failed')} failed")
    if st.count("missing"):
        counts += f", {st.count('missing')} missing"
    if st.count("unknown"):
        counts += f", {st.count('unknown')} unknown (scheduler did not answer)"
    if st.service:
        return f"{st.name} (service): {st.count('running')} running, {st.count('pending')} pending"
    s = st.stats
    parts = [f"{st.name}: {counts}", f"{fmt_count(s.records)} records"]
    if s.records_per_s is not None:
        parts[-1] += f" {s.records_per_s:.2f}/s"
    if s.requests:
        parts.append(f"{fmt_count(s.requests)} requests, {fmt_count(s.tokens_in)}/{fmt_count(s.tokens_out)} "
                     f"tokens in/out, ${s.cost_usd:.2f}" + (f" (reference ${s.ref_cost_usd:.2f})" if s.ref_cost_usd else ""))
    if s.failed_units:
        parts.append(f"{s.failed_units} failed units")
    parts.append("complete" if st.complete else f"ETA {fmt_duration(s.eta_s)}")
    return " | ".join(parts)


class PlainPrinter:
    """Prints a stage's line when its shard states change (or, while records grow, once a minute)."""

    def __init__(self, stream: IO[str] | None = None, heartbeat_s: float = PLAIN_HEARTBEAT_S) -> None:
        self.stream = stream or sys.stdout
        self.heartbeat_s = heartbeat_s
        self.states: dict[str, tuple[int, ...]] = {}
        self.numbers: dict[str, tuple[int, int]] = {}
        self.printed_at: dict[str, float] = {}
        self.failures: set[str] = set()

    def update(self, stages: list[StageStatus]) -> None:
        now = time.monotonic()
        stamp = time.strftime("%H:%M:%S")
        for st in stages:
            states = tuple(st.count(s) for s in ("done", "running", "pending", "failed", "missing", "unknown"))
            numbers = (st.stats.records, st.stats.requests)
            changed = states != self.states.get(st.name)
            grew = numbers != self.numbers.get(st.name) and now - self.printed_at.get(st.name, 0) >= self.heartbeat_s
            if changed or grew:
                print(f"[{stamp}] {stage_line(st)}", file=self.stream, flush=True)
                self.printed_at[st.name] = now
                self.numbers[st.name] = numbers
            self.states[st.name] = states
        for line in failure_lines(stages, limit=20):
            if line not in self.failures:
                self.failures.add(line)
                print(f"[{stamp}] {line}", file=self.stream, flush=True)


class Snapshotter:
    """The run's status, recomputed at most every `interval` seconds (one squeue per refresh)."""

    def __init__(self, run: RunDir, cfg: PipelineConfig, interval: float = 5.0,
                 collect: Callable[..., list[StageStatus]] | None = None) -> None:
        self.run, self.cfg, self.interval = run, cfg, interval
        self.cache = StatusCache()
        self._collect = collect
        self._lock = threading.Lock()
        self.stages: list[StageStatus] = []
        self.t = 0.0
        self.refreshes = 0

    def refresh(self, force: bool = False) -> list[StageStatus]:
        with self._lock:
            if force or not self.stages or time.monotonic() - self.t >= self.interval:
                if self._collect is not None:
                    self.stages = self._collect(self.run, self.cfg, cache=self.cache)
                else:
                    from skymath.pipeline import runner

                    self.stages = runner.status(self.run, self.cfg, cache=self.cache)
                self.t = time.monotonic()
                self.refreshes += 1
            return self.stages

    def renderable(self, note: str = ""):
        from rich.console import Group
        from rich.text import Text

        stages = self.stages
        title = f"skymath {self.run.root.name}  {time.strftime('%H:%M:%S')}"
        lines = [Text(x, style="red" if x.startswith("failed") else "yellow") for x in failure_lines(stages)]
        tail = f"refresh every {self.interval:g}s"
        if any(st.count("unknown") for st in stages):
            tail += "; the scheduler did not answer this time: its shards show as unknown"
        lines.append(Text(f"{tail}. {note}".rstrip(". ") + ".", style="dim"))
        return Group(status_table(stages, title=title), *lines)


@contextmanager
def live_view(run: RunDir, cfg: PipelineConfig, interval: float = 5.0, note: str = "") -> Iterator[Snapshotter]:
    """A live table redrawn in the background while the caller (the local executor) works; its
    own prints appear above the table."""
    from rich.console import Console
    from rich.live import Live

    snap = Snapshotter(run, cfg, interval)

    def render():
        try:
            snap.refresh()
        except Exception as e:  # noqa: BLE001 - a view never kills the run it shows
            from rich.text import Text

            return Text(f"status unavailable: {type(e).__name__}: {e}")
        return snap.renderable(note)

    with Live(get_renderable=render, console=Console(), refresh_per_second=1, redirect_stdout=True,
              redirect_stderr=False, transient=False):
        yield snap


def watch(run: RunDir, cfg: PipelineConfig, view: View = "auto", interval: float = 5.0,
          timeout_s: float | None = None, stream: IO[str] | None = None,
          note: str = "Ctrl-C stops watching; the run goes on") -> list[StageStatus]:
    """Refresh until nothing runs, waits or is unknown; returns the last status."""
    mode = resolve_view(view, stream)
    snap = Snapshotter(run, cfg, interval)
    t0 = time.monotonic()

    def expired() -> bool:
        return timeout_s is not None and time.monotonic() - t0 > timeout_s

    if mode == "plain":
        printer = PlainPrinter(stream)
        while True:
            stages = snap.refresh(force=True)
            printer.update(stages)
            if is_idle(stages):
                return stages
            if expired():
                raise UserError(f"{run.root}: still running after {timeout_s:.0f}s")
            time.sleep(interval)

    from rich.console import Console
    from rich.live import Live

    console = Console(file=stream) if stream is not None else Console()
    snap.refresh(force=True)
    with Live(snap.renderable(note), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            if is_idle(snap.stages):
                live.update(snap.renderable())
                return snap.stages
            if expired():
                raise UserError(f"{run.root}: still running after {timeout_s:.0f}s")
            time.sleep(interval)
            snap.refresh(force=True)
            live.update(snap.renderable(note))
