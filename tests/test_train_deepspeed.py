"""DeepSpeed ZeRO-2 / ZeRO-3 through the Trainer on CPU: 2 processes (gloo) started by
`python -m skymath.train.launch` -> torchrun -> the real worker; rank 0 alone writes the marker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.train_common import (
    data_stage,
    load_state,
    make_run,
    math_records,
    subprocess_env,
    tiny_llama_dir,
)

from skymath.models import stage_model_dir


@pytest.mark.timeout(900)
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_zero_through_torchrun_trains_and_saves_a_loadable_model(tmp_path, zero):
    import torch
    from transformers import AutoModelForCausalLM

    base = tiny_llama_dir()
    params = {"model": str(base), "max_steps": 3, "global_batch_size": 4, "micro_batch_size": 2, "max_length": 128,
              "lr": 1e-3, "logging_steps": 1, "save_steps": 2, "deepspeed": zero}
    run = make_run(tmp_path, {"data": data_stage(),
                              "sft-1": {"kind": "sft", "depends_on": ["data"], "resources": {"gpus": 2}, "params": params}},
                   {"data": math_records(24)})
    env = subprocess_env(SKYMATH_NPROC_PER_NODE="2")
    r = subprocess.run([sys.executable, "-m", "skymath.train.launch", str(run.root), "sft-1", "0"], env=env,
                       capture_output=True, text=True, timeout=840)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "torch.distributed.run" in r.stderr and "--nproc_per_node=2" in r.stderr
    meta = json.loads(run.done_path("sft-1", 0).read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 3 and meta["grad_accum"] == 1
    assert not list(run.stage_dir("sft-1").glob("*.failed"))
    ckpt = run.work_dir("sft-1", 0) / "checkpoints" / "checkpoint-2"
    assert (ckpt / "COMPLETE").exists() and list(ckpt.glob("global_step2/*optim_states.pt"))

    out = stage_model_dir(run.root, "sft-1")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    w, w0 = load_state(out), load_state(base)
    assert set(w0) <= set(w) and all(w[k].shape == w0[k].shape for k in w0)  # full (gathered) weights
    if "lm_head.weight" in w:  # DeepSpeed may write the tied head out: it must still be the embedding
        assert torch.equal(w["lm_head.weight"], w["model.embed_tokens.weight"])
    assert max(float((w[k] - w0[k]).abs().max()) for k in w0) > 1e-4
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()
