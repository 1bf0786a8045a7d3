"""The SFT disk estimate that `skymath check` and `skymath estimate` print: parameter counts from
real model files and configs, bytes per checkpoint by ZeRO stage, and the paper presets."""

from __future__ import annotations

from pathlib import Path

from support.train_common import load_state, tiny_llama_dir

from skymath.config import load_config
from skymath.train.footprint import (
    KNOWN_CONFIGS,
    disk_needed_bytes,
    model_params,
    params_from_config,
    sft_footprints,
)

REPO = Path(__file__).resolve().parent.parent


def test_param_counts_match_the_real_models(tmp_path):
    d = tiny_llama_dir()
    real = sum(t.numel() for t in load_state(d).values())  # the tensors themselves (tied head stored once)
    n, source = model_params(str(d))
    assert n == real and "safetensors" in source  # exact, from the headers only
    (tmp_path / "config.json").write_text((d / "config.json").read_text())  # a config-only copy
    assert model_params(str(tmp_path)) == (real, str(tmp_path / "config.json"))
    # the published sizes of the presets' base models
    assert params_from_config(KNOWN_CONFIGS["mistralai/Mistral-7B-v0.1"]) == 7_241_732_096
    assert params_from_config(KNOWN_CONFIGS["meta-llama/Llama-2-7b-hf"]) == 6_738_415_616
    assert params_from_config(KNOWN_CONFIGS["tiny:smollm2"]) == 134_515_008
    assert model_params("no-such-org/no-such-model")[0] is None


def test_paper_preset_checkpoint_and_disk():
    cfg = load_config(REPO / "launch" / "skywork-mistral-7b.yaml")
    fps = {f.stage: f for f in sft_footprints(cfg)}
    n = 7_241_732_096
    f1 = fps["sft-1"]
    assert (f1.params, f1.deepspeed, f1.bf16, f1.keep) == (n, "zero2", True, 2)
    assert f1.checkpoint_bytes == 16 * n  # bf16 module + fp32 master/m/v + bf16 HF weights: ~116 GB
    assert f1.peak_bytes == 3 * 16 * n + 2 * n and f1.after_success_bytes == 2 * 2 * n + 2 * n
    assert fps["sft-2"].params == n  # stage:sft-1 -> the root model of the chain
    assert disk_needed_bytes(list(fps.values())) == f1.after_success_bytes + fps["sft-2"].peak_bytes
    z3 = sft_footprints(load_config(REPO / "launch" / "skywork-mistral-7b.yaml",
                                    ["stages.sft-1.params.deepspeed=zero3"]))[0]
    assert z3.checkpoint_bytes == 14 * n


def test_estimate_prints_the_sft_disk(tmp_path, capsys):
    from skymath.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "stages:\n"
        "  data: {kind: seeds, params: {sources: [math_train], limit: 4}}\n"
        "  tok: {kind: tokenize, depends_on: [data]}\n"
        "  sft-1: {kind: sft, depends_on: [tok], params: {model: tiny:smollm2, max_steps: 12, save_steps: 6}}\n")
    assert main(["estimate", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(ln for ln in lines if ln.startswith("sft-1 "))
    assert "0.13B" in row and "1.6 GB" in row and " 2 " in row  # 12 B x 134.5M (fp32 + Adam m, v); 2 saves
    assert any(ln.startswith("SFT disk needed on the run's file system: 5.4 GB") for ln in lines), lines
