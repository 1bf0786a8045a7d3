"""The rehearsal of a paper preset on the REAL local Slurm cluster: `skymath run
launch/skywork-mistral-7b.yaml --rehearse --executor slurm --profile local --wait` runs the preset
file itself (same stages, shapes, templates, dependencies, services, decontamination and report),
scaled down, with a local OpenAI-compatible server and the tiny model. One synthesis array task and
the SFT job hit a REAL time limit (Slurm's USR2 at `--signal=B:USR2@lead`), stop cleanly, requeue
and finish: every record exactly once, optimizer steps continuous across the requeue.

This replaces the demo-on-Slurm test (tests/test_demo.py): it covers the same ground (every stage
kind on Slurm, the service stage, both SFT stages, three evaluations, the report) on the preset.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from support.slurm_helpers import require_cluster

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "launch" / "skywork-mistral-7b.yaml"
PAPER = sorted(REPO.glob("launch/skywork-*-7b.yaml"))


def skymath(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skymath", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()] if path.exists() \
        else []


@pytest.mark.parametrize("preset", PAPER, ids=[p.stem for p in PAPER])
def test_rehearsal_dry_run_keeps_the_preset_graph_and_lists_its_changes(tmp_path, preset):
    require_cluster()
    r = skymath("run", str(preset), "--rehearse", "--executor", "slurm", "--profile", "local", "--dry-run",
                "-o", f"run.root={tmp_path}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "rehearsal:" in r.stdout and "REAL time limit" in r.stdout
    assert "stages.llm: added" in r.stdout
    run = tmp_path / f"{preset.stem}-rehearsal"
    scripts = {p.name for p in run.glob("slurm/*/*.sh")}
    original = yaml.safe_load(preset.read_text())["stages"]
    # every stage of the preset is submitted (plus the local LLM server and its stop job)
    assert {s.split(".p")[0] for s in scripts if ".p" in s} == set(original) | {"llm"}
    sft = next((run / "slurm").glob("*/sft-1.p0.sh")).read_text()
    assert "--gres=gpu:2" in sft and "skymath.train.launch" in sft and "--nproc-per-node 2" in sft
    assert not (run / "config.yaml").exists()  # a dry run freezes nothing


@pytest.mark.parametrize("preset", PAPER, ids=[p.stem for p in PAPER])
def test_the_time_limited_stages_get_the_presets_limit_back(tmp_path, preset):
    """What LimitRestorer restores after the first requeue: exactly the two time-limited stages, each
    to its preset's own limit (not the short one the rehearsal gave it)."""
    from skymath.config.load import load_config
    from skymath.pipeline.rehearse import rehearse_config, restored_limits

    cfg = load_config(preset, [f"run.root={tmp_path}"])
    new, changes = rehearse_config(cfg, "local")
    limits = restored_limits(changes)
    assert set(limits) == {"synth-hard", "sft-1"}
    for stage, limit in limits.items():
        assert limit == cfg.stages[stage].resources.time != new.stages[stage].resources.time


def _slurm_log(run: Path, stage: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((run / "logs" / stage).glob("*_*.out")))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rehearsal_of_a_paper_preset_on_the_local_cluster(tmp_path, tiny_model):
    require_cluster()
    t0 = time.monotonic()
    r = skymath("run", str(PRESET), "--rehearse", "--executor", "slurm", "--profile", "local", "--wait",
                "--no-watch", "-o", f"run.root={tmp_path}", timeout=1700)
    wall = time.monotonic() - t0
    run = tmp_path / "skywork-mistral-7b-rehearsal"
    (tmp_path / "rehearsal.out").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)  # for a failed CI run
    assert r.returncode == 0, f"after {wall:.0f}s\n" + r.stdout[-4000:] + r.stderr[-4000:]
    print(f"rehearsal wall time {wall:.0f} s")
    check_rehearsal(run, r.stdout + r.stderr)


def check_rehearsal(run: Path, output: str) -> None:
    """Everything a rehearsal must show (also usable on a run made by hand)."""
    # the check ran first (and passed), the changes were listed and recorded
    assert "skymath check: skywork-mistral-7b-rehearsal on profile local: OK" in output
    changes = json.loads((run / "rehearsal.json").read_text())
    limited = {c["key"].split(".")[1] for c in changes if "REAL time limit" in c["why"]}
    assert limited == {"synth-hard", "sft-1"}
    # after the first stop at the short limit, each requeued job got the preset's limit back
    for stage in limited:
        assert re.search(rf"\[rehearsal\] {stage}: job \S+ was stopped by its time limit and requeued", output), stage

    # ---- the same graph as the preset, every stage complete ---------------------------------------
    frozen = yaml.safe_load((run / "config.yaml").read_text())["stages"]
    original = yaml.safe_load(PRESET.read_text())["stages"]
    assert set(frozen) == set(original) | {"llm"}
    for name, spec in original.items():
        assert frozen[name]["kind"] == spec["kind"] and frozen[name]["depends_on"] == spec.get("depends_on", [])
    st = skymath("status", str(run), "--json", timeout=300)
    assert st.returncode == 0, st.stdout[-3000:] + st.stderr[-3000:]

    # ---- synthesis: one array task stopped by its time limit, requeued, every record exactly once --
    log = _slurm_log(run, "synth-hard")
    assert "SIGUSR2: time limit near" in log and "requeueing job" in log, log[-3000:]
    restarted = sorted({int(m) for m in re.findall(r"restart (\d+) on", log)})
    assert restarted[-1] >= 1, log[-3000:]
    records = [rec for p in sorted((run / "stages" / "synth-hard").glob("shard-?????.jsonl")) for rec in read_jsonl(p)]
    ids = Counter(rec["id"] for rec in records)
    assert records and max(ids.values()) == 1, ids.most_common(3)
    for shard_dir in (run / "stages" / "synth-hard").glob("shard-?????"):
        units = read_jsonl(shard_dir / "units.jsonl")
        final: dict[str, dict] = {}
        for u in units:
            final[u["unit"]] = u
        made = Counter(rid for u in final.values() for rid in u.get("records", []))
        assert max(made.values(), default=1) == 1  # no record made by two units
    kept = {rec["id"] for p in (run / "stages" / "decontam-hard").glob("shard-?????.jsonl") for rec in read_jsonl(p)}
    removed = {rec["id"] for p in (run / "stages" / "decontam-hard").glob("*.removed.jsonl") for rec in read_jsonl(p)}
    assert kept | removed == set(ids) and not kept & removed  # downstream sees each record once

    # ---- SFT: gpu-multinode template, 2 gloo ranks, stopped by its time limit, checkpoint, requeue --
    log = _slurm_log(run, "sft-1")
    assert "SIGUSR2: time limit near" in log and "requeueing job" in log, log[-4000:]
    saved = [int(k) for k in re.findall(r"stop requested: saving checkpoint-(\d+)", log)]
    resumed = [int(k) for k in re.findall(r"resuming from \S*checkpoint-(\d+)", log)]
    assert saved and resumed and resumed[-1] == saved[-1] >= 1, log[-4000:]
    marker = json.loads((run / "stages" / "sft-1" / "shard-00000.done").read_text())
    assert marker["world_size"] == 2 and marker["steps"] == frozen["sft-1"]["params"]["max_steps"]
    assert marker["resumed_from"].endswith(f"checkpoint-{resumed[-1]}")
    steps = [int(s) for s in re.findall(r"sft: step (\d+)/\d+ loss", log)]
    before, after = [s for s in steps if s <= saved[-1]], [s for s in steps if s > saved[-1]]
    assert before and after and after == sorted(after) and len(set(after)) == len(after)  # continuous, once each

    # ---- evaluation of base / intermediate / final and the report ------------------------------------
    for ev in ("eval-base", "eval-sft-1", "eval-sft-2"):
        assert json.loads((run / "stages" / ev / "metrics.json").read_text())
    text = (run / "report" / "report.md").read_text()
    for part in ("base", "intermediate", "final", "Run summary"):
        assert part.lower() in text.lower(), part
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in (run / "report").glob("*.png"))
    # services were stopped: no worker of this run is left on the cluster
    q = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, timeout=60)
    assert run.name not in q.stdout
