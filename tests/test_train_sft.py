"""SFT end to end through the real worker: 30 steps on the real SmolLM2, stage-2 chaining, and
preemption (SIGTERM at step >= 10 -> checkpoint -> rerun resumes -> same weights as uninterrupted)."""

from __future__ import annotations

import json
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
    one_thread,
    subprocess_env,
    tiny_llama_dir,
)

from skymath.models import stage_model_dir
from skymath.worker import EXIT_STOPPED, run_shard


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    old = one_thread()
    yield
    torch.set_num_threads(old)


def _marker(run, stage):
    return json.loads(run.done_path(stage, 0).read_text())


@pytest.mark.timeout(900)
def test_30_steps_real_smollm2_loss_goes_down_and_model_generates(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skymath.prompts import sft_prompt

    recs = math_records(6, max_chars=220)
    params = {"model": "tiny:smollm2", "max_steps": 30, "global_batch_size": 1, "max_length": 96, "lr": 1e-4,
              "logging_steps": 1, "save_steps": 1000}
    run = make_run(tmp_path, {"data": data_stage(), "sft-1": {"kind": "sft", "depends_on": ["data"], "params": params}},
                   {"data": recs})
    assert run_shard(run.root, "sft-1", 0) == 0
    meta = _marker(run, "sft-1")
    assert meta["steps"] == 30 and meta["world_size"] == 1 and meta["tokens"] > 0
    hist = json.loads((run.work_dir("sft-1", 0) / "log_history.json").read_text())["log_history"]
    losses = [h["loss"] for h in hist if "loss" in h]
    assert len(losses) >= 25
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert (run.stage_dir("sft-1") / "tensorboard").is_dir()

    out = stage_model_dir(run.root, "sft-1")
    assert meta["model_dir"] == str(out)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    enc = tok(sft_prompt(recs[0].problem), return_tensors="pt")
    gen = model.generate(**enc, max_new_tokens=12, do_sample=False)
    new = gen[0, enc["input_ids"].shape[1]:]
    assert len(new) > 0 and tok.decode(new, skip_special_tokens=True).strip()


def test_stage2_starts_from_stage1_output_not_the_base_model(tmp_path):
    base = tiny_llama_dir()
    common = {"global_batch_size": 4, "micro_batch_size": 2, "max_length": 128, "logging_steps": 1,
              "save_steps": 1000, "warmup_ratio": 0.0}
    stages = {
        "normal": data_stage(),
        "hard": data_stage(),
        "sft-1": {"kind": "sft", "depends_on": ["normal"], "params": {"model": str(base), "max_steps": 4, "lr": 1e-2, **common}},
        "sft-2": {"kind": "sft", "depends_on": ["sft-1", "hard"],
                  "params": {"model": "stage:sft-1", "max_steps": 1, "lr": 1e-12, **common}},
    }
    run = make_run(tmp_path, stages, {"normal": math_records(16), "hard": math_records(8, max_chars=600, level=5)})
    assert run_shard(run.root, "sft-1", 0) == 0
    assert run_shard(run.root, "sft-2", 0) == 0
    m2 = _marker(run, "sft-2")
    assert m2["base_model"] == str(stage_model_dir(run.root, "sft-1"))
    assert m2["data"]["samples"] + m2["data"]["dropped"] + m2["data"]["val_samples"] == 8  # the hard stage only
    w0, w1, w2 = load_state(base), load_state(stage_model_dir(run.root, "sft-1")), load_state(stage_model_dir(run.root, "sft-2"))
    key = "model.layers.0.mlp.up_proj.weight"
    assert (w1[key] - w0[key]).abs().max() > 1e-3  # stage 1 trained
    assert all((w2[k] - w1[k]).abs().max() < 1e-6 for k in w1)  # stage 2 began at stage 1's weights


def _worker(run, env):
    return subprocess.Popen([sys.executable, "-m", "skymath.worker", str(run.root), "sft-1", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


CKPT_FILES = {"COMPLETE", "config.json", "generation_config.json", "model.safetensors", "trainer_state.json",
              "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
TRAINING_STATE = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"}


def _ckpts(work):
    return sorted((p for p in (work / "checkpoints").glob("checkpoint-*") if (p / "COMPLETE").exists()),
                  key=lambda p: int(p.name.split("-")[1]))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_checkpoints_and_rerun_resumes_to_the_same_weights(tmp_path):
    """SIGTERM at step >= 10 -> a checkpoint within the step -> exit 143; the rerun resumes with a
    continuous step count to the weights of an uninterrupted run. Keep-last-2 over saves every 5
    steps, then post-success pruning leaves exactly the weights of the last two checkpoints. W&B
    (offline) logs both attempts under one run id."""
    base = tiny_llama_dir()
    params = {"model": str(base), "max_steps": 24, "global_batch_size": 4, "micro_batch_size": 2, "max_length": 128,
              "lr": 1e-3, "logging_steps": 1, "save_steps": 5, "keep_checkpoints": 2, "seed": 7}
    stages = {"data": data_stage(), "sft-1": {"kind": "sft", "depends_on": ["data"],
                                              "params": {**params, "report_to": ["tensorboard", "wandb"]}}}
    recs = math_records(40)
    env = subprocess_env(WANDB_MODE="offline", WANDB_SILENT="true")
    run = make_run(tmp_path / "a", stages, {"data": recs})
    work = run.work_dir("sft-1", 0)
    proc = _worker(run, env)
    deadline = time.time() + 600
    step = -1
    while proc.poll() is None and time.time() < deadline:
        try:
            step = json.loads((work / "progress.json").read_text())["step"]
        except (FileNotFoundError, json.JSONDecodeError):
            step = -1
        if step >= 11:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_STOPPED, err[-3000:]
    assert not run.is_done("sft-1", 0) and run.failed_path("sft-1", 0).exists()
    assert not stage_model_dir(run.root, "sft-1").exists()
    ckpts = _ckpts(work)
    stopped_at = int(ckpts[-1].name.split("-")[1])
    assert 11 <= stopped_at < 24 and "stop requested: saving checkpoint-" in err
    # keep-last-2 over the saves at 5, 10 and the stop (15 if the stop fell on it)
    saved = sorted(set(range(5, stopped_at + 1, 5)) | {stopped_at})
    assert [c.name for c in ckpts] == [f"checkpoint-{s}" for s in saved[-2:]]
    assert sorted(p.name for p in (work / "checkpoints").glob("checkpoint-*")) == sorted(c.name for c in ckpts)
    assert all(TRAINING_STATE <= {f.name for f in c.iterdir()} for c in ckpts)  # resumable until success
    run_id = (work / "wandb_run_id").read_text().strip()
    # a half-written newer checkpoint (no completion file) must never be picked
    (work / "checkpoints" / "checkpoint-23").mkdir()
    (work / "checkpoints" / "checkpoint-23" / "config.json").write_text("{")

    proc = _worker(run, env)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    meta = _marker(run, "sft-1")
    assert meta["resumed_from"].endswith(f"checkpoint-{stopped_at}") and meta["steps"] == 24
    steps = [h["step"] for h in log_history(run, "sft-1") if "loss" in h]
    assert steps == list(range(1, 25))  # continuous across the stop: every step logged exactly once
    # after success: the last two checkpoints, weights only; nothing else under checkpoints/
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["checkpoint-20", "checkpoint-24"]
    for c in _ckpts(work):
        assert {f.name for f in c.iterdir()} == CKPT_FILES, c
    assert meta["checkpoints_kept"] == ["checkpoint-20", "checkpoint-24"]
    assert (work / "wandb_run_id").read_text().strip() == run_id
    runs = sorted(p.name for p in (work / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.endswith(f"-{run_id}") for r in runs), runs  # one W&B run, two attempts

    ref = make_run(tmp_path / "b", {"data": data_stage(), "sft-1": {"kind": "sft", "depends_on": ["data"],
                                                                    "params": params}}, {"data": recs})
    assert run_shard(ref.root, "sft-1", 0) == 0
    assert _marker(ref, "sft-1")["resumed_from"] is None
    wa, wb = load_state(stage_model_dir(run.root, "sft-1")), load_state(stage_model_dir(ref.root, "sft-1"))
    w0 = load_state(base)
    assert max(float((wa[k] - w0[k]).abs().max()) for k in wa) > 1e-3
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert diff < 1e-5, diff
