"""The main job (launch/demo.yaml) end to end: a smaller slice on the local executor that is killed
half-way (SIGTERM), resumed, and compared with a clean run. Plus the paper-scale recipes: plan and a
Slurm dry run render the full DAG.

The whole recipe on the local Slurm cluster is covered by tests/test_rehearse.py: the rehearsal of
a paper preset runs every stage kind through sbatch (the llm-server service, both SFT stages, three
evaluations, the report) plus two real time-limit requeues; it replaced the demo-on-Slurm test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "launch" / "demo.yaml"
PAPER = sorted(REPO.glob("launch/skywork-*-7b.yaml"))

# a smaller slice of the same config for the local executor
SLICE = [
    "stages.seeds.params.limit=3", "stages.seeds-hard.params.limit=2", "stages.coreset.params.k=2",
    "stages.synth-seed.params.max_seeds=3", "stages.synth-normal.params.max_seeds=2",
    "stages.synth-hard.params.max_seeds=2", "stages.sft-1.params.max_steps=4", "stages.sft-1.params.save_steps=2",
    "stages.sft-2.params.max_steps=2", "stages.sft-2.params.save_steps=2",
    *[f"stages.{s}.params.benchmarks=[{{name: gsm8k, limit: 3}}, {{name: math, limit: 3}}]"
      for s in ("eval-base", "eval-sft-1", "eval-sft-2")],
    *[f"stages.{s}.params.max_new_tokens=64" for s in ("eval-base", "eval-sft-1", "eval-sft-2")],
]


def skymath(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "skymath", *args], capture_output=True, text=True, timeout=timeout,
                       cwd=REPO)
    return r


def stage_records(run: Path) -> dict[str, int]:
    """Records per stage from the .done markers (what the report's run summary shows)."""
    out: dict[str, int] = {}
    for done in sorted(run.glob("stages/*/shard-*.done")):
        out[done.parent.name] = out.get(done.parent.name, 0) + json.loads(done.read_text()).get("records", 0)
    return out


def check_artifacts(run: Path, evals: int) -> dict[str, int]:
    r = skymath("status", str(run), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr  # every stage complete
    counts = stage_records(run)
    for stage in ("seeds", "seeds-hard", "synth-seed", "coreset", "synth-normal", "decontam", "synth-hard",
                  "decontam-hard"):
        assert counts.get(stage, 0) >= 1, (stage, counts)
    assert counts["decontam"] <= counts["synth-normal"] and counts["decontam-hard"] <= counts["synth-hard"]
    assert counts["coreset"] <= counts["synth-seed"]
    for stage in ("synth-seed", "synth-normal", "synth-hard"):
        for rec in map(json.loads, (run / "stages" / stage / "shard-00000.jsonl").read_text().splitlines()):
            assert "\nThe answer is " in rec["response"] and rec["method"] in ("metamath", "evol", "xwin")
    for sft in ("sft-1", "sft-2"):
        model = run / "stages" / sft / "model"
        assert (model / "config.json").exists() and list(model.glob("*.safetensors")), sft
    marker = json.loads((run / "stages" / "sft-2" / "shard-00000.done").read_text())
    assert str(run / "stages" / "sft-1" / "model") in json.dumps(marker)  # stage 2 started from stage 1
    for ev in ("eval-base", "eval-sft-1", "eval-sft-2"):
        rows = (run / "stages" / ev / "results.jsonl").read_text().splitlines()
        assert len(rows) == evals, ev
        assert json.loads((run / "stages" / ev / "metrics.json").read_text())
    rep = run / "report"
    text = (rep / "report.md").read_text()
    for part in ("base", "intermediate", "final", "Run summary", "reference cost", "by level", "by subject"):
        assert part.lower() in text.lower(), part
    pngs = list(rep.glob("*.png"))
    assert len(pngs) >= 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (rep / "overall.csv").exists()
    return counts


def test_paper_recipes_plan_and_dry_run(tmp_path, slurm_cluster):
    assert len(PAPER) == 3
    for cfg in PAPER:
        r = skymath("plan", str(cfg))
        assert r.returncode == 0, r.stderr
        assert "synth-normal" in r.stdout and "1024" in r.stdout and "gpu-multinode" in r.stdout
        r = skymath("run", str(cfg), "--executor", "slurm", "--dry-run", "-o", f"run.root={tmp_path}")
        assert r.returncode == 0, r.stdout + r.stderr
        scripts = list((tmp_path / cfg.stem / "slurm").glob("*/*.sh"))
        assert len(scripts) >= 16
        sft = next(p for p in scripts if p.name.startswith("sft-1")).read_text()
        assert "torchrun" in sft or "torch.distributed.run" in sft
        assert "--gres=gpu:8" in sft and "apptainer" in sft
        assert not list(tmp_path.glob(f"{cfg.stem}/stages/*/*.done"))  # nothing ran


def _wait_for(pred, timeout: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.5)
    return False


def test_demo_slice_local_killed_half_way_resumes_to_clean_counts(tmp_path, tiny_model):
    over = [x for o in SLICE for x in ("-o", o)]
    clean = skymath("run", str(DEMO), *over, "-o", f"run.root={tmp_path / 'clean'}", timeout=2400)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    clean_counts = check_artifacts(tmp_path / "clean" / "demo", evals=6)

    root = tmp_path / "killed"
    cmd = [sys.executable, "-m", "skymath", "run", str(DEMO), *over, "-o", f"run.root={root}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    run = root / "demo"
    started = _wait_for(lambda: (run / "logs" / "sft-1").exists(), 1500)
    os.killpg(proc.pid, signal.SIGTERM) if not started else os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert started, out[-3000:]
    assert proc.returncode == 143, out[-3000:]
    assert not (run / "stages" / "sft-2" / "shard-00000.done").exists()
    done_before = {p: p.stat().st_mtime_ns for p in run.glob("stages/*/shard-*.done")}
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "complete, skipped" in resumed.stdout
    # complete shards were skipped, not redone
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items())
    assert check_artifacts(run, evals=6) == clean_counts


@pytest.mark.parametrize("bad", ["stages.sft-1.params.global_batch_size=5", "stages.synth-seed.params.mixx={}"])
def test_demo_config_errors_are_one_line(bad):
    r = skymath("plan", str(DEMO), "-o", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
