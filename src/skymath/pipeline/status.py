"""Status of a run, derived from the run directory: markers, the shards' progress files and the
local executor's state file (the Slurm executor adds job states from ONE squeue + sacct).

Per stage: shard states (done / running / pending / failed / missing / unknown) and the run's
numbers so far — records, requests, tokens, dollars, records/s and an ETA — the same for local
and Slurm runs, because both come from files the shards write themselves.

States: `done` has a .done marker; `running` is a live worker (its progress file's pid on this
host, or squeue); `pending` waits in the local executor's queue or in Slurm's; `failed` has a
.failed marker (local log path or Slurm job + log); `missing` is not done and nothing will run
it; `unknown` is a shard whose scheduler did not answer this time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skymath.config.schema import PipelineConfig
from skymath.pipeline.dag import Pipeline
from skymath.pipeline.procs import process_alive
from skymath.pipeline.rundir import RunDir

STATES = ("done", "running", "pending", "failed", "missing", "unknown")
LOCAL_STATE_FILE = "local-executor.json"  # written by the local executor while it runs


@dataclass
class ShardState:
    shard: int
    state: str  # one of STATES
    job_id: str | None = None
    log: str | None = None
    error: str | None = None
    records: int | None = None
    done: int | None = None  # work units finished (units, prompts, steps) of the current attempt
    total: int | None = None
    updated: float | None = None  # last progress write (epoch seconds)


@dataclass
class StageStats:
    """The stage's numbers so far (done shards + the partial work of the others)."""

    records: int = 0
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0  # API spend at the configured prices
    ref_cost_usd: float = 0.0  # what llm.reference_price_model would have charged (self-hosted servers)
    failed_units: int = 0  # units that failed permanently inside shards (synthesis)
    units_done: int = 0  # work units finished (the denominator of the failure rate)
    records_per_s: float | None = None  # of the shards running now
    fraction: float = 0.0  # of the stage's work, 0..1
    eta_s: float | None = None
    updated: float | None = None


@dataclass
class StageStatus:
    name: str
    kind: str
    shape: str
    num_shards: int
    service: bool = False
    shards: list[ShardState] = field(default_factory=list)
    stats: StageStats = field(default_factory=StageStats)

    def count(self, state: str) -> int:
        return sum(1 for s in self.shards if s.state == state)

    def indices(self, state: str) -> list[int]:
        return [s.shard for s in self.shards if s.state == state]

    @property
    def complete(self) -> bool:
        return self.count("done") == self.num_shards

    @property
    def active(self) -> bool:
        """Something may still change: a shard runs, waits, or its state is unknown."""
        return any(s.state in ("running", "pending", "unknown") for s in self.shards)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _listdir(path: Path) -> set[str]:
    """ONE directory listing per stage and refresh (1,024 stat calls on NFS would not be)."""
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def local_executor_state(run: RunDir) -> dict[str, Any] | None:
    """The state file of a local executor that is running this run right now, else None."""
    st = _read_json(run.root / LOCAL_STATE_FILE)
    if not st or not process_alive(st.get("pid"), st.get("host"), st.get("pid_start")):
        return None
    return st


@dataclass
class _DoneInfo:
    records: int
    usage: dict[str, Any]
    seconds: float | None


def _done_info(run: RunDir, stage: str, shard: int, progress: dict | None) -> _DoneInfo:
    m = _read_json(run.done_path(stage, shard)) or {}
    usage = dict(m.get("usage") or {})
    for k in ("prompt_tokens", "completion_tokens"):
        if k in m and k not in usage:
            usage[k] = m[k]
    p = progress or {}
    merged = {"requests": p.get("requests", usage.get("requests", 0)),
              "tokens_in": p.get("tokens_in", usage.get("prompt_tokens", 0)),
              "tokens_out": p.get("tokens_out", usage.get("completion_tokens", 0)),
              "cost_usd": p.get("cost_usd", usage.get("cost_usd")),
              "ref_cost_usd": p.get("ref_cost_usd", usage.get("reference_cost_usd")),
              "failed": p.get("failed", usage.get("failures", 0)),
              "done": p.get("done", 0)}
    return _DoneInfo(int(m.get("records", p.get("records", 0)) or 0), merged, m.get("seconds"))


class StatusCache:
    """What never changes once a shard is done (its marker and final progress), kept between
    refreshes so `--watch` on a 1,024-shard stage re-reads only the shards still running."""

    def __init__(self) -> None:
        self.done: dict[tuple[str, int], _DoneInfo] = {}


def collect_status(run: RunDir, cfg: PipelineConfig, cache: StatusCache | None = None,
                   now: float | None = None) -> list[StageStatus]:
    now = time.time() if now is None else now
    pipe = Pipeline.from_config(cfg)
    local = local_executor_state(run)
    local_stages: dict[str, str] = (local or {}).get("stages", {})
    local_started = float((local or {}).get("started", 0))
    out = []
    for name in pipe.order:
        spec = cfg.stages[name]
        st = StageStatus(name, spec.kind, spec.shape or "", spec.num_shards, service=pipe.is_service(name))
        names = _listdir(run.stage_dir(name))
        running_progress: list[dict] = []
        done_infos: list[_DoneInfo] = []
        partial: list[dict] = []
        for i in range(spec.num_shards):
            base = run.shard_name(i)
            prog = _read_json(run.progress_path(name, i)) if f"{base}.progress.json" in names else None
            if f"{base}.done" in names:
                info = cache.done.get((name, i)) if cache else None
                if info is None:
                    info = _done_info(run, name, i, prog)
                    if cache is not None:
                        cache.done[(name, i)] = info
                done_infos.append(info)
                st.shards.append(ShardState(i, "done", records=info.records))
                continue
            sh = ShardState(i, "missing")
            if prog:
                sh.records, sh.done, sh.total, sh.updated = (prog.get("records"), prog.get("done"),
                                                             prog.get("total"), prog.get("updated"))
                partial.append(prog)
                alive = process_alive(prog.get("pid"), prog.get("host"), prog.get("pid_start"))
                if prog.get("state") == "running" and alive:
                    sh.state = "running"
                    sh.job_id = prog.get("job_id")
                    prog = _with_trainer_steps(run, name, i, prog)
                    sh.done, sh.total = prog.get("done"), prog.get("total")
                    running_progress.append(prog)
            failed = _read_json(run.failed_path(name, i)) if f"{base}.failed" in names else None
            local_log = run.log_dir(name) / f"{base}.log"
            if sh.state != "running":
                queued = local_stages.get(name) in ("waiting", "running")
                if failed and not (queued and float(failed.get("failed_at", 0)) < local_started):
                    sh.state = "failed"
                    sh.job_id = failed.get("SLURM_JOB_ID")
                    sh.error = failed.get("error")
                    if local_log.exists():
                        sh.log = str(local_log)
                elif queued:
                    sh.state = "pending"
            elif local_log.exists():
                sh.log = str(local_log)
            st.shards.append(sh)
        if not st.service:
            st.stats = _stage_stats(cfg, st, done_infos, partial, running_progress, now)
        out.append(st)
    return out


def _with_trainer_steps(run: RunDir, stage: str, shard: int, prog: dict) -> dict:
    """A training shard counts steps, not items: its trainer writes <work dir>/progress.json
    (step, max_steps; train/sft.py), which gives the shard's done/total for the ETA."""
    if prog.get("total"):
        return prog
    tp = _read_json(run.stage_dir(stage) / run.shard_name(shard) / "progress.json")
    if not tp or not tp.get("max_steps"):
        return prog
    return {**prog, "done": int(tp.get("step") or 0), "total": int(tp["max_steps"]), "done_start": 0}


def _price_tokens(cfg: PipelineConfig, tokens_in: int, tokens_out: int) -> float:
    """Dollars for API tokens a shard reported without a cost, at the configured price table."""
    try:
        from skymath.synth.accounting import cost, price_for

        return cost(price_for(cfg.llm, cfg.llm.model), tokens_in, tokens_out)
    except Exception:  # noqa: BLE001 - a status view never fails on pricing
        return 0.0


def _stage_stats(cfg: PipelineConfig, st: StageStatus, done_infos: list[_DoneInfo], partial: list[dict],
                 running: list[dict], now: float) -> StageStats:
    s = StageStats()
    rows = [d.usage | {"records": d.records} for d in done_infos] + partial
    for r in rows:
        s.records += int(r.get("records") or 0)
        s.requests += int(r.get("requests") or 0)
        s.tokens_in += int(r.get("tokens_in") or 0)
        s.tokens_out += int(r.get("tokens_out") or 0)
        s.failed_units += int(r.get("failed") or 0)
        s.units_done += int(r.get("done") or 0)
        c = r.get("cost_usd")
        if c is None and r.get("requests"):
            c = _price_tokens(cfg, int(r.get("tokens_in") or 0), int(r.get("tokens_out") or 0))
        s.cost_usd += float(c or 0.0)
        s.ref_cost_usd += float(r.get("ref_cost_usd") or 0.0)
    s.cost_usd = round(s.cost_usd, 6)
    s.ref_cost_usd = round(s.ref_cost_usd, 6)
    s.updated = max((float(p["updated"]) for p in partial if p.get("updated")), default=None)
    n = max(1, st.num_shards)
    frac = float(len(done_infos))
    rec_rate = 0.0
    frac_rate = 0.0
    for p in running:
        elapsed = max(1e-6, now - float(p.get("started", now)))
        rec_rate += max(0, int(p.get("records") or 0) - int(p.get("records_start") or 0)) / elapsed
        total = p.get("total")
        if total:
            d = min(int(p.get("done") or 0), int(total))
            frac += d / total
            frac_rate += max(0, d - int(p.get("done_start") or 0)) / total / elapsed
    s.fraction = min(1.0, frac / n)
    s.records_per_s = round(rec_rate, 3) if running else None
    if st.complete:
        s.eta_s = 0.0
    elif frac_rate > 0:
        # the stage's work left at the pace of the shards running now (queued shards take their slots)
        s.eta_s = round((1.0 - s.fraction) * n / frac_rate, 1)
    elif running:
        secs = [d.seconds for d in done_infos if d.seconds]
        if secs:
            left = st.num_shards - len(done_infos)
            s.eta_s = round(left * (sum(secs) / len(secs)) / len(running), 1)
    return s


# ---- rendering -------------------------------------------------------------------------------------------
def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def status_table(stages: list[StageStatus], title: str = "skymath status"):
    """The per-stage table (rich) shared by `status`, `status --watch` and `run --wait`."""
    from rich import box
    from rich.table import Table

    unknown = any(st.count("unknown") for st in stages)
    ref = any(st.stats.ref_cost_usd for st in stages)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    # short headers: the whole table fits 120 columns (done/running/pending/failed/missing/unknown)
    cols = ["stage", "shards", "done", "run", "pend", "fail", "miss"] + (["unknown"] if unknown else [])
    cols += ["records", "rec/s", "req", "tok in/out", "USD"] + (["ref USD"] if ref else []) + ["fail%", "ETA"]
    for col in cols:
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for st in stages:
        counts = [str(st.count(s)) for s in ("done", "running", "pending", "failed", "missing")]
        if unknown:
            counts.append(str(st.count("unknown")))
        if st.service:  # a server: up while its consumers run, never "done"
            counts[0], counts[3], counts[4] = "-", "-", "-"
            table.add_row(f"{st.name} (service)", str(st.num_shards), *counts, *["-"] * (8 if ref else 7))
            continue
        s = st.stats
        fail = f"{100 * s.failed_units / max(1, s.units_done):.1f}" if s.units_done and s.requests else "-"
        table.add_row(st.name, str(st.num_shards), *counts, fmt_count(s.records),
                      "-" if s.records_per_s is None else f"{s.records_per_s:.2f}",
                      fmt_count(s.requests) if s.requests else "-",
                      f"{fmt_count(s.tokens_in)}/{fmt_count(s.tokens_out)}" if s.tokens_in or s.tokens_out else "-",
                      f"{s.cost_usd:.2f}" if s.cost_usd else "-",
                      *([f"{s.ref_cost_usd:.2f}" if s.ref_cost_usd else "-"] if ref else []), fail,
                      "done" if st.complete else fmt_duration(s.eta_s))
    return table


def failure_lines(stages: list[StageStatus], limit: int = 10) -> list[str]:
    """One line per failed (or unknown) shard: stage[shard], job, log path, error."""
    out = []
    for st in stages:
        for sh in st.shards:
            if sh.state not in ("failed", "unknown"):
                continue
            where = f" job {sh.job_id}" if sh.job_id else ""
            log = f" log {sh.log}" if sh.log else ""
            out.append(f"{sh.state} {st.name}[{sh.shard}]{where}{log}: {sh.error or ''}".rstrip(": "))
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more (skymath status --json)"]
    return out


def render_status(stages: list[StageStatus]) -> None:
    """Print the status table plus the error and log of each failed shard."""
    from rich.console import Console

    console = Console(width=max(140, Console().width))
    console.print(status_table(stages))
    for line in failure_lines(stages, limit=50):
        color = "red" if line.startswith("failed") else "yellow"
        console.print(f"[{color}]{line}[/{color}]", highlight=False)
