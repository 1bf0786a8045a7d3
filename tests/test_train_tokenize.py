"""The `tokenize` stage (a 2-shard CPU array) -> `sft`: trains to the same losses and weights as a
1-process sft that tokenizes its raw record stages itself; the report shows the loss curve and
tokens/s; a time-based save interval saves between step-based saves."""

from __future__ import annotations

import json

import pytest
from support.train_common import (
    data_stage,
    load_state,
    log_history,
    make_run,
    math_records,
    one_thread,
    run_stage,
    tiny_llama_dir,
)

from skymath.models import stage_model_dir


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    old = one_thread()
    yield
    torch.set_num_threads(old)


@pytest.mark.timeout(900)
def test_tokenize_stage_trains_to_the_same_loss_as_in_process_tokenization(tmp_path):
    from skymath.evaluate.report import write_report
    from skymath.stages.tokenize import part_path

    base = tiny_llama_dir()
    params = {"model": str(base), "max_steps": 6, "global_batch_size": 4, "micro_batch_size": 2, "max_length": 160,
              "lr": 3e-3, "logging_steps": 1, "save_steps": 4, "eval_steps": 3, "val_samples": 6, "seed": 5,
              "warmup_ratio": 0.0}
    shards = [math_records(30), math_records(30, offset=30)]
    staged = make_run(tmp_path / "a", {
        "data": data_stage(2),
        "tok": {"kind": "tokenize", "num_shards": 2, "depends_on": ["data"], "resources": {"cpus": 2}},
        "sft-1": {"kind": "sft", "depends_on": ["tok"], "params": params}}, {"data": shards})
    direct = make_run(tmp_path / "b", {
        "data": data_stage(2), "sft-1": {"kind": "sft", "depends_on": ["data"], "params": params}}, {"data": shards})

    run_stage(staged, "tok")
    metas = [json.loads((part_path(staged, "tok", i) / "meta.json").read_text()) for i in (0, 1)]
    assert [m["records"] for m in metas] == [30, 30]  # one input shard each
    marker = json.loads(staged.done_path("tok", 0).read_text())
    assert marker["records"] == metas[0]["train_samples"] and marker["val_samples"] == metas[0]["val_samples"]
    run_stage(staged, "sft-1")
    run_stage(direct, "sft-1")
    assert not (direct.work_dir("sft-1", 0) / "tokenized").exists()  # in-process scratch removed after success

    ma, mb = (json.loads(r.done_path("sft-1", 0).read_text()) for r in (staged, direct))
    assert ma["data"]["samples"] == mb["data"]["samples"] == 60 - ma["data"]["val_samples"]
    assert ma["data"]["val_samples"] == mb["data"]["val_samples"] == 6  # exactly val_samples on small data
    ha, hb = log_history(staged, "sft-1"), log_history(direct, "sft-1")
    for key in ("loss", "eval_loss"):
        la = [(h["step"], h[key]) for h in ha if key in h]
        lb = [(h["step"], h[key]) for h in hb if key in h]
        assert [s for s, _ in la] == [s for s, _ in lb] and len(la) >= (6 if key == "loss" else 2), key
        assert max(abs(x - y) for (_, x), (_, y) in zip(la, lb, strict=True)) < 1e-5, (key, la, lb)
    wa, wb = load_state(stage_model_dir(staged.root, "sft-1")), load_state(stage_model_dir(direct.root, "sft-1"))
    w0 = load_state(base)
    assert max(float((wa[k] - w0[k]).abs().max()) for k in wa) > 1e-3  # it trained
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    assert ma["tokens_per_s"] > 0 and ma["mfu"] is None and ma["device"] == "cpu"  # MFU n/a on CPU
    assert ma["val_loss"] == [h["eval_loss"] for h in ha if "eval_loss" in h][-1]

    report = write_report(staged.root)
    text = report.read_text()
    assert "## SFT stages" in text and "tokens/s" in text and "![loss curve of sft-1](loss_sft-1.png)" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| sft-1 |"))
    assert f"| {round(ma['val_loss'], 4)} |" in row and f"| {round(ma['tokens_per_s'], 1)} |" in row
    assert (report.parent / "loss_sft-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_every_minutes_saves_between_step_saves(monkeypatch):
    """The time-based interval: one all-reduced decision per step (no process group here)."""
    from transformers import TrainerControl, TrainerState

    from skymath.train import sft

    clock = [1000.0]
    monkeypatch.setattr(sft.time, "monotonic", lambda: clock[0])
    stop = [False]
    cb = sft._StepControl(lambda: stop[0], save_every_minutes=2)

    class Args:
        device = "cpu"

    state = TrainerState()
    cb.on_train_begin(Args, state, TrainerControl())
    clock[0] += 119
    assert not cb.on_step_end(Args, state, TrainerControl()).should_save
    clock[0] += 2
    ctl = cb.on_step_end(Args, state, TrainerControl())
    assert ctl.should_save and not ctl.should_training_stop
    cb.on_save(Args, state, ctl)
    clock[0] += 60
    assert not cb.on_step_end(Args, state, TrainerControl()).should_save  # the interval restarts at a save
    stop[0] = True
    ctl = cb.on_step_end(Args, state, TrainerControl(should_evaluate=True))
    assert ctl.should_save and ctl.should_training_stop and not ctl.should_evaluate and cb.stopped
