"""`skymath run PRESET --rehearse`: the preset itself, scaled down, on a small cluster.

Same stage graph, shapes, templates, dependencies, services, decontamination and report as the
paper run; only sizes change, and every change is listed (printed at launch and written to
`runs/<name>-rehearsal/rehearsal.json`):
* the run is `<name>-rehearsal` (a rehearsal never mixes with the real run's directory);
* shards, seeds, samples, benchmark items, tokens and SFT steps are capped;
* the tiny real model (`tiny:smollm2`) replaces the 7B for training and evaluation, and a local
  OpenAI-compatible server (an added `llm-server` service stage, like the demo's) replaces the
  paid API for every stage that calls the LLM;
* resources shrink to what a 2-core node holds (2 ranks for SFT, gloo on CPU; 1 fake GPU for
  evaluation); vLLM evaluation becomes the transformers backend (no GPU here);
* quality filters that the 135M model cannot pass (gold-answer match, truncation, length ratio)
  are relaxed, or nothing would reach training;
* two stages get a short real time limit so that Slurm's USR2 (`--signal=B:USR2@signal_lead_s`)
  arrives while they work: one synthesis array (off the critical path) and the first SFT stage.
  Their steps stop cleanly (partial output kept / checkpoint saved), the jobs requeue, and the
  run completes with every record exactly once and the optimizer steps continuous.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skymath.config.cluster import ClusterProfile
from skymath.config.schema import PipelineConfig
from skymath.errors import UserError

SUFFIX = "-rehearsal"
REQUEUES = 6  # the rehearsal profile's max_requeues (at least)
TINY = "tiny:smollm2"
LLM_STAGE = "llm"
MAX_SHARDS = 2
SEEDS = {"seeds": 8, "default": 10}
# per synthesis stage: the 135M model yields a record for about one unit in two (MetaMath, Xwin;
# Evol-Instruct's evolutions rarely pass), and SFT needs a few records
SYNTH_MAX_SEEDS = 6
SYNTH_LIMITED_SEEDS = 10  # the time-limited synthesis stage: enough work to outlast its first signal
SYNTH_TOKENS = 48
SFT_STEPS = 30  # the time-limited SFT stage: its first attempt never finishes them; the others train a fifth
EVAL_ITEMS = 2
# Slurm signals `signal_lead_s` before the limit, up to ~30 s early (its timer's resolution). The first
# attempt of each time-limited stage is always cut short; once it has been requeued, the rehearsal
# gives the job its preset time limit back (`scontrol update`, see LimitRestorer), so the rerun
# finishes however fast or slow the machine is.
SYNTH_LIMIT_AFTER_S = 60  # the time-limited synthesis stage is signalled about this long after it starts
SFT_LIMIT_AFTER_S = 120  # ... and the time-limited SFT stage (it must have trained some steps by then)
RESTORE_WHY = "after its first requeue the job gets the preset's time limit back (scontrol update), so the rerun finishes"


@dataclass
class Change:
    key: str  # dotted config key
    old: Any
    new: Any
    why: str


class _Editor:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.changes: list[Change] = []
        self.restore: dict[str, str] = {}  # time-limited stage -> the preset's time limit

    def get(self, key: str, default: Any = None) -> Any:
        cur: Any = self.data
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur

    def set(self, key: str, new: Any, why: str) -> None:
        parts = key.split(".")
        cur = self.data
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        old = cur.get(parts[-1])
        if old == new:
            return
        cur[parts[-1]] = new
        self.changes.append(Change(key, old, new, why))

    def cap(self, key: str, limit: int | float, why: str) -> None:
        old = self.get(key)
        if old is None or old > limit:
            self.set(key, limit, why)


def _minutes(seconds: float) -> str:
    """Slurm time for at least `seconds`, in whole minutes (Slurm's granularity)."""
    m = max(1, math.ceil(seconds / 60))
    return f"{m // 60:02d}:{m % 60:02d}:00"


def _llm_users(cfg: PipelineConfig) -> list[str]:
    from skymath.preflight.apikey import llm_stages

    return llm_stages(cfg)


def _time_limited(cfg: PipelineConfig) -> tuple[str | None, str | None]:
    """(synthesis stage, sft stage) that get a real time limit: a synth stage off the path to the
    first SFT stage (its requeue costs no wall time), and the first SFT stage."""
    from skymath.pipeline.dag import Pipeline

    pipe = Pipeline.from_config(cfg)
    sfts = [s for s in pipe.order if cfg.stages[s].kind == "sft"]
    synths = [s for s in pipe.order if cfg.stages[s].kind == "synth"]
    first_sft = sfts[0] if sfts else None
    ancestors: set[str] = set()
    if first_sft:
        todo = [first_sft]
        while todo:
            for p in pipe.parents(todo.pop()):
                if p not in ancestors:
                    ancestors.add(p)
                    todo.append(p)
    off_path = [s for s in synths if s not in ancestors]
    synth = (off_path or synths or [None])[-1]
    return synth, first_sft


def rehearse_config(cfg: PipelineConfig, profile_ref: str | None = None) -> tuple[PipelineConfig, list[Change]]:
    """The scaled-down copy of a config and the list of what changed (and why)."""
    from skymath.config.cluster import load_profile
    from skymath.config.load import config_from_dict

    profile = load_profile(profile_ref or cfg.cluster.profile)
    data = json.loads(json.dumps(cfg.model_dump(mode="json")))
    ed = _Editor(data)
    if not cfg.run.name.endswith(SUFFIX):
        ed.set("run.name", cfg.run.name + SUFFIX, "a rehearsal never mixes with the real run's directory")
    if profile_ref:
        ed.set("cluster.profile", profile_ref, "the cluster the rehearsal runs on")

    # ---- the LLM: a local OpenAI-compatible server instead of the paid API -------------------------
    users = _llm_users(cfg)
    stages = ed.data["stages"]
    svc = LLM_STAGE if LLM_STAGE not in stages else LLM_STAGE + SUFFIX
    if users:
        new_stage = {"kind": "llm-server", "depends_on": [], "services": [], "num_shards": 1,
                     "resources": {"gpus": 1, "cpus": 1, "mem_gb": 4, "time": "04:00:00"},
                     "params": {"model": TINY, "poll_s": 1.0, "enable_sampling": False}}
        ed.set(f"stages.{svc}", new_stage, "a local OpenAI-compatible server (transformers serve, the tiny model) "
               "as a service stage, started before and stopped after its consumers")
        ed.set("llm.service", svc, "every LLM call goes to the local server")
        ed.set("llm.endpoints", [], "no paid API")
        ed.set("llm.model", TINY, "what the local server serves (costs are still priced as "
               f"{cfg.llm.reference_price_model})")
        ed.cap("llm.concurrency", 1, "one CPU server answers one request at a time: one in flight per shard")
        ed.cap("llm.max_tokens", SYNTH_TOKENS, "tokens per answer on a CPU server")
        ed.set("llm.temperature", 0.0, "greedy: the same records on every rehearsal (a CPU server that "
               "interleaves sampled requests shares one random generator)")
        ed.set("llm.timeout_s", max(cfg.llm.timeout_s, 600.0), "requests queue behind each other on one CPU server")
        for name in users:
            if svc not in stages[name].get("services", []):
                ed.set(f"stages.{name}.services", [*stages[name].get("services", []), svc],
                       "calls the LLM: uses the local server")
    synth_limited, sft_limited = _time_limited(cfg)
    lead = profile.signal_lead_s

    for name, spec in cfg.stages.items():
        k = f"stages.{name}"
        p = spec.params
        if spec.num_shards > MAX_SHARDS:
            ed.set(f"{k}.num_shards", MAX_SHARDS, "shards capped (still an array)")
        res = spec.resources
        if res.array_throttle and res.array_throttle > MAX_SHARDS:
            ed.set(f"{k}.resources.array_throttle", MAX_SHARDS, "throttle of a capped array")
        if spec.kind == "sft":
            _sft(ed, k, spec, name == sft_limited, lead)
            continue
        ed.cap(f"{k}.resources.cpus", 1, "a 2-core machine: one thread per process (two torch threads per "
               "process on a busy 2-core machine were measured 5x slower than one)")
        ed.cap(f"{k}.resources.mem_gb", 4, "a small node")
        if (spec.shape or "").startswith("gpu"):
            ed.cap(f"{k}.resources.gpus", 1, "one (fake) GPU per task")
        if spec.kind == "seeds":
            ed.cap(f"{k}.params.limit", SEEDS.get(name, SEEDS["default"]), "seed problems capped")
            if p.sample_seed is None:
                ed.set(f"{k}.params.sample_seed", 0, "a spread of the seed sources, not the first file's first rows")
        elif spec.kind == "synth":
            _synth(ed, k, spec, name == synth_limited, lead)
        elif spec.kind == "distractors":
            ed.cap(f"{k}.params.limit", 2, "GSM8K problems capped")
            if len(p.counts) > 1:
                ed.set(f"{k}.params.counts", p.counts[:1], "distractor counts capped")
            ed.cap(f"{k}.params.max_tokens", SYNTH_TOKENS * 2, "tokens per rewrite on a CPU server")
            ed.set(f"{k}.params.failure_tolerance", 1.0, "the 135M model rarely rewrites acceptably")
            if getattr(p, "max_attempts", 1) > 1:
                ed.set(f"{k}.params.max_attempts", 1, "one rewrite per variant")
        elif spec.kind == "eval":
            _eval(ed, k, spec)
        elif spec.kind == "coreset":
            if p.batch_size > 64:
                ed.set(f"{k}.params.batch_size", 64, "CPU embedding")
    for name, limit in ed.restore.items():
        ed.changes.append(Change(f"stages.{name}.resources.time", None, limit, RESTORE_WHY))
    new = config_from_dict(data, f"{cfg.run.name} (rehearsal)")
    new.run.root = Path(cfg.run.root)
    new.data.root = Path(cfg.data.root)
    return new, ed.changes


def restored_limits(changes: list[Change]) -> dict[str, str]:
    """stage -> time limit its jobs get back after their first requeue."""
    return {c.key.split(".")[1]: c.new for c in changes if c.why == RESTORE_WHY}


class LimitRestorer:
    """While `run --rehearse --wait` waits: a job of a time-limited stage that Slurm has stopped at
    its limit and requeued gets the preset's time limit back (`scontrol update JobId=.. TimeLimit=..`,
    allowed to root / an operator), so its next attempt finishes. The first stop is Slurm's own USR2
    at the real limit; without this (no --wait, or not allowed) the rerun keeps the short limit and
    relies on max_requeues."""

    def __init__(self, run_root: Path, limits: dict[str, str], poll_s: float = 2.0) -> None:
        import threading

        self.ledger = Path(run_root) / "jobs.jsonl"
        self.limits = limits
        self.poll_s = poll_s
        self.done: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rehearsal-limits", daemon=True)

    def start(self) -> LimitRestorer:
        if self.limits:
            self.thread.start()
        return self

    def _jobs(self) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            lines = self.ledger.read_text(encoding="utf-8").splitlines()
        except OSError:
            return out
        for ln in lines:
            try:
                e = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if e.get("event") == "submit" and e.get("stage") in self.limits and e.get("role", "stage") == "stage":
                out[str(e["job_id"])] = e["stage"]
        return out

    def _loop(self) -> None:
        while not self.stop.wait(self.poll_s):
            for job, stage in self._jobs().items():
                self.check(job, stage)

    def check(self, job: str, stage: str) -> None:
        import subprocess

        from skymath.preflight.facts import parse_oneliner

        try:
            r = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return
        for line in r.stdout.splitlines():
            d = parse_oneliner(line)
            jid = d.get("JobId", "")
            restarts = int(d.get("Restarts", "0")) if d.get("Restarts", "0").isdigit() else 0
            if not jid or jid in self.done or restarts < 1 or d.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"):
                continue
            limit = self.limits[stage]
            # an array task by `<array>_<task>`: the bare job id of the task that holds the array's
            # own id would address every task of the array
            task = f"{d.get('ArrayJobId')}_{d.get('ArrayTaskId')}" if d.get("ArrayTaskId") else jid
            try:  # this thread must not die on a slow controller: the job then keeps the short limit
                u = subprocess.run(["scontrol", "update", f"JobId={task}", f"TimeLimit={limit}"],
                                   capture_output=True, text=True, timeout=30)
                rc, why = u.returncode, (u.stderr or u.stdout).strip()
            except (OSError, subprocess.TimeoutExpired) as e:
                rc, why = 1, str(e)
            self.done.add(jid)
            if rc == 0:
                print(f"[rehearsal] {stage}: job {task} was stopped by its time limit and requeued "
                      f"(restart {restarts}); its limit is the preset's {limit} again", flush=True)
            else:
                print(f"[rehearsal] {stage}: could not restore the time limit of job {task} "
                      f"({why}); it reruns with the short limit", flush=True)


def _synth(ed: _Editor, k: str, spec: Any, limited: bool, lead: int) -> None:
    p = spec.params
    ed.cap(f"{k}.params.max_seeds", SYNTH_LIMITED_SEEDS if limited else SYNTH_MAX_SEEDS,
           "seeds per synthesis stage capped" + (" (enough work to outlast the first signal)" if limited else ""))
    for kind, v in p.metamath.samples.items():
        if v > 1:
            ed.set(f"{k}.params.metamath.samples.{kind}", 1, "samples per seed capped")
    for method, field in (("evol", "trajectories"), ("xwin", "samples")):
        if getattr(getattr(p, method), field) > 1:
            ed.set(f"{k}.params.{method}.{field}", 1, "samples per seed capped")
    if p.evol.max_steps > 1:
        ed.set(f"{k}.params.evol.max_steps", 1, "evolution steps capped")
    ed.cap(f"{k}.params.max_tokens", SYNTH_TOKENS, "tokens per answer on a CPU server")
    if getattr(p, "target_records", None):
        ed.cap(f"{k}.params.target_records", 8, "records per stage capped")
        ed.cap(f"{k}.params.max_scale", 1.0, "the 135M model's low yield must not scale the capped requests up")
    for key, val in (("match_gold", False), ("drop_truncated", False), ("few_shot", False),
                     ("min_length_ratio", 0.0), ("min_problem_chars", 10)):
        if getattr(p, key) != val:
            ed.set(f"{k}.params.{key}", val, "the 135M model cannot pass the paper's quality filters: "
                   "without this nothing would reach training")
    if limited:
        ed.restore[k.split(".")[1]] = spec.resources.time
        ed.set(f"{k}.resources.time", _minutes(lead + SYNTH_LIMIT_AFTER_S),
               f"REAL time limit: USR2 about {SYNTH_LIMIT_AFTER_S} s after start (signal_lead_s {lead}); the "
               "shard keeps its partial output, the job requeues and resumes")
        ed.set(f"{k}.params.failure_tolerance", 0.5, "requests cut by the stop are retried after the requeue")
        if p.stop_grace_s > 5:
            ed.set(f"{k}.params.stop_grace_s", 5.0, "units in flight at the signal are cut (and redone after the "
                   "requeue) rather than waited for: the first attempt stops even on a fast machine")


def _sft(ed: _Editor, k: str, spec: Any, limited: bool, lead: int) -> None:
    p = spec.params
    if not p.model.startswith("stage:") and p.model != TINY:
        ed.set(f"{k}.params.model", TINY, "the tiny real model instead of the 7B")
    ed.set(f"{k}.resources.gpus", 2, "2 ranks (gloo on CPU) through the gpu-multinode template")
    ed.cap(f"{k}.resources.nodes", 1, "one node")
    ed.cap(f"{k}.resources.cpus", 2, "a 2-core machine")
    ed.cap(f"{k}.resources.mem_gb", 8, "a small node")
    ed.cap(f"{k}.params.max_length", 256, "short sequences on CPU")
    ed.set(f"{k}.params.global_batch_size", 4, "2 ranks x micro batch 1 x accumulation 2")
    ed.set(f"{k}.params.micro_batch_size", 1, "CPU")
    if p.grad_accum is not None:
        ed.set(f"{k}.params.grad_accum", None, "derived from the batch")
    ed.set(f"{k}.params.max_steps", SFT_STEPS if limited else SFT_STEPS // 5, "optimizer steps capped")
    if p.bf16:
        ed.set(f"{k}.params.bf16", False, "no GPU: fp32 on CPU")
    ed.set(f"{k}.params.save_steps", 1000, "no periodic checkpoint: the one from the time-limit signal is tested")
    if getattr(p, "save_every_minutes", None):
        ed.set(f"{k}.params.save_every_minutes", None, "no periodic checkpoint: the signal's is tested")
    ed.cap(f"{k}.params.keep_checkpoints", 2, "disk")
    ed.cap(f"{k}.params.logging_steps", 2, "log every other step")
    if p.val_samples:
        ed.cap(f"{k}.params.val_samples", 2, "a tiny validation slice")
    if getattr(p, "eval_steps", None):
        ed.set(f"{k}.params.eval_steps", None, "validation at the end only")
    if limited:
        ed.restore[k.split(".")[1]] = spec.resources.time
        ed.set(f"{k}.resources.time", _minutes(lead + SFT_LIMIT_AFTER_S),
               f"REAL time limit: USR2 about {SFT_LIMIT_AFTER_S} s after start (signal_lead_s {lead}); the ranks "
               "save a checkpoint, the job requeues and training continues from it")


def _eval(ed: _Editor, k: str, spec: Any) -> None:
    p = spec.params
    if p.backend == "vllm":
        ed.set(f"{k}.params.backend", "hf", "no GPU for vLLM here: the transformers backend")
    if not p.model.startswith("stage:") and p.model != TINY and p.backend != "openai":
        ed.set(f"{k}.params.model", TINY, "the tiny real model instead of the 7B")
    benches = [b.model_dump(mode="json", exclude_none=True) for b in p.benchmarks]
    capped = [{**b, "limit": min(b.get("limit") or EVAL_ITEMS, EVAL_ITEMS)} for b in benches]
    if capped != benches:
        ed.set(f"{k}.params.benchmarks", capped, f"{EVAL_ITEMS} items per benchmark")
    ed.cap(f"{k}.params.max_new_tokens", SYNTH_TOKENS, "tokens per answer on CPU")
    ed.cap(f"{k}.params.batch_size", 8, "CPU")


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return "{...}"
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


def format_changes(changes: list[Change]) -> str:
    """One line per (stage or section, reason): `stages.X: a 1 -> 2, b true -> false  # why`."""
    groups: dict[tuple[str, str], list[str]] = {}
    for c in changes:
        parts = c.key.split(".")
        head = ".".join(parts[:2]) if parts[0] == "stages" else parts[0]
        rest = ".".join(parts[2:] if parts[0] == "stages" else parts[1:]) or "(added)"
        groups.setdefault((head, c.why), []).append(f"{rest} {_short(c.old)} -> {_short(c.new)}"
                                                    if rest != "(added)" else "added")
    lines = [f"rehearsal: {len(changes)} change(s) to the preset; everything else runs as configured "
             "(all of them: rehearsal.json in the run directory)"]
    for (head, why), items in groups.items():
        lines.append(f"  {head}: {', '.join(items)}  # {why}")
    return "\n".join(lines)


def rehearse_profile(profile: ClusterProfile) -> tuple[ClusterProfile, list[Change]]:
    """The cluster profile for a rehearsal: more requeues, since each short attempt on a busy
    machine may get only a few requests or steps done before its signal."""
    new = profile.model_copy(deep=True)
    changes: list[Change] = []
    if new.max_requeues < REQUEUES:
        changes.append(Change("profile.max_requeues", profile.max_requeues, REQUEUES,
                              "the time-limited stages may need several short attempts on a busy machine"))
        new.max_requeues = REQUEUES
    return new, changes


def rehearse_run(cfg: PipelineConfig, profile_ref: str | None, dry_run: bool = False):
    """For `run --rehearse`: the rehearsal config (its `cluster.profile` is the rehearsal's profile,
    written into the run dir) and its run dir; prints and records every change."""
    import yaml

    from skymath.config.cluster import load_profile
    from skymath.pipeline.rundir import RunDir

    new, changes = rehearse_config(cfg, profile_ref)
    profile, more = rehearse_profile(load_profile(profile_ref or cfg.cluster.profile))
    changes += more
    new.executor = cfg.executor.model_copy()
    print(format_changes(changes), flush=True)
    run = RunDir(new.run_dir)
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        path = run.root / "rehearsal-profile.yaml"
        path.write_text(yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False))
        (run.root / "rehearsal.json").write_text(json.dumps([asdict(c) for c in changes], indent=1) + "\n")
    except OSError as e:
        raise UserError(f"run.root: cannot write the rehearsal's profile into {run.root}: {e.strerror or e}") from None
    new.cluster.profile = str(path)
    if not dry_run:  # a dry run renders its scripts into the run directory as well, nothing else
        LimitRestorer(run.root, restored_limits(changes)).start()
    return run, new
