"""DeepSpeed ZeRO-2 / ZeRO-3 through the Trainer on CPU: 2 processes (gloo) started by
`python -m skymath.train.launch` -> torchrun -> the real worker, on data from a `tokenize` stage
(no rank tokenizes: each rank logs its counter); rank 0 alone writes the marker. ZeRO-2: a SIGTERM
to rank 1 alone stops both ranks at the same step with one checkpoint; the rerun resumes with a
continuous step count, and post-success pruning leaves the kept checkpoints' weights only."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from support.train_common import (
    data_stage,
    load_state,
    log_history,
    make_run,
    math_records,
    run_stage,
    subprocess_env,
    tiny_llama_dir,
)

from skymath.models import stage_model_dir

NO_TOKENIZING = re.compile(r"sft: rank (\d)/2: \d+ train \+ \d+ validation samples memory-mapped from 2 tokenized "
                           r"part\(s\); samples tokenized by this process: 0")


def _run(tmp_path, zero: str, **extra):
    params = {"model": str(tiny_llama_dir()), "global_batch_size": 4, "micro_batch_size": 2, "max_length": 128,
              "lr": 1e-3, "logging_steps": 1, "deepspeed": zero, "val_samples": 4, **extra}
    run = make_run(tmp_path, {
        "data": data_stage(2), "tok": {"kind": "tokenize", "num_shards": 2, "depends_on": ["data"]},
        "sft-1": {"kind": "sft", "depends_on": ["tok"], "resources": {"gpus": 2}, "params": params}},
        {"data": [math_records(20), math_records(20, offset=20)]})
    run_stage(run, "tok")
    return run


def _launch(run, **kw):
    env = subprocess_env(SKYMATH_NPROC_PER_NODE="2")
    return subprocess.Popen([sys.executable, "-m", "skymath.train.launch", str(run.root), "sft-1", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)


def _no_rank_tokenized(err: str) -> None:
    assert sorted(NO_TOKENIZING.findall(err)) == ["0", "1"], err[-3000:]
    assert "tokenizing" not in err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_zero3_through_torchrun_trains_and_saves_a_loadable_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    run = _run(tmp_path, "zero3", max_steps=3, save_steps=2)
    proc = _launch(run)
    _, err = proc.communicate(timeout=840)
    assert proc.returncode == 0, err[-4000:]
    assert "torch.distributed.run" in err and "--nproc_per_node=2" in err
    _no_rank_tokenized(err)
    meta = json.loads(run.done_path("sft-1", 0).read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 3 and meta["grad_accum"] == 1
    assert meta["val_loss"] is not None and meta["tokens_per_s"] > 0
    assert not list(run.stage_dir("sft-1").glob("*.failed"))

    out = stage_model_dir(run.root, "sft-1")
    base = tiny_llama_dir()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    w, w0 = load_state(out), load_state(base)
    assert set(w0) <= set(w) and all(w[k].shape == w0[k].shape for k in w0)  # full (gathered) weights
    if "lm_head.weight" in w:  # DeepSpeed may write the tied head out: it must still be the embedding
        assert torch.equal(w["lm_head.weight"], w["model.embed_tokens.weight"])
    assert max(float((w[k] - w0[k]).abs().max()) for k in w0) > 1e-4
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            if "skymath.worker" in " ".join(child.cmdline()) and child.environ().get("RANK") == str(rank):
                return child.pid
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_zero2_two_ranks_stop_on_one_rank_saves_and_resumes_with_continuous_steps(tmp_path):
    run = _run(tmp_path, "zero2", max_steps=12, save_steps=3, keep_checkpoints=2)
    work = run.work_dir("sft-1", 0)
    proc = _launch(run)
    deadline, sent = time.time() + 600, False
    while proc.poll() is None and time.time() < deadline and not sent:
        try:
            step = json.loads((work / "progress.json").read_text())["step"]
        except (FileNotFoundError, json.JSONDecodeError):
            step = -1
        pid = _rank_pid(proc.pid, 1) if step >= 4 else None
        if pid:
            import os

            os.kill(pid, signal.SIGTERM)  # rank 1 only: both ranks must agree to stop at the same step
            sent = True
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert sent and proc.returncode != 0, err[-4000:]
    _no_rank_tokenized(err)
    saved = re.findall(r"stop requested: saving checkpoint-(\d+)", err)
    assert len(saved) == 2 and len(set(saved)) == 1, err[-4000:]  # both ranks, the same step
    stopped_at = int(saved[0])
    assert 4 <= stopped_at < 12 and not run.is_done("sft-1", 0)
    assert "stopped by" in json.loads(run.failed_path("sft-1", 0).read_text())["error"]
    ckpt = work / "checkpoints" / f"checkpoint-{stopped_at}"
    assert (ckpt / "COMPLETE").exists() and len(list(ckpt.glob(f"global_step{stopped_at}/*optim_states.pt"))) == 2

    proc = _launch(run)
    _, err = proc.communicate(timeout=840)
    assert proc.returncode == 0, err[-4000:]
    _no_rank_tokenized(err)
    meta = json.loads(run.done_path("sft-1", 0).read_text())
    assert meta["steps"] == 12 and meta["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    assert [h["step"] for h in log_history(run, "sft-1") if "loss" in h] == list(range(1, 13))
    kept = sorted({3, 6, 9, 12, stopped_at})[-2:]
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == sorted(f"checkpoint-{s}" for s in kept)
    for s in kept:
        names = {p.name for p in (work / "checkpoints" / f"checkpoint-{s}").iterdir()}
        assert "model.safetensors" in names and "COMPLETE" in names and "trainer_state.json" in names
        assert not {n for n in names if n.startswith("global_step") or n in ("latest", "optimizer.pt")}, names
    assert meta["checkpoints_kept"] == [f"checkpoint-{s}" for s in kept]
