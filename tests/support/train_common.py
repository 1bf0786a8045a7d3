"""Helpers of the SFT tests and benches: a tiny random Llama with the real SmolLM2 tokenizer,
synthetic-looking records from real MATH problems, and run directories with a finished data stage."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from skymath.config import config_from_dict, dump_config
from skymath.paths import default_data_root
from skymath.pipeline.rundir import RunDir
from skymath.records import Record, write_jsonl


def tiny_llama_dir(cache: Path | None = None) -> Path:
    """A 3M-parameter random LlamaConfig model saved with the SmolLM2 tokenizer (plumbing tests)."""
    from skymath.models import cached_model_dir, tiny_model_dir
    from skymath.paths import cache_root

    def build():
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(tiny_model_dir())
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                          tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        return LlamaForCausalLM(cfg), tok

    return cached_model_dir((cache or cache_root()) / "models" / "tiny-llama-smollm2-tok", build)


def math_records(n: int, max_chars: int = 400, level: int | None = None, offset: int = 0) -> list[Record]:
    """Short MATH-train problems with responses in the recipe's format (solution + `\\nThe answer is X`)."""
    out: list[Record] = []
    skipped = 0
    with gzip.open(default_data_root() / "math_train.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            lvl = int(row["level"][-1]) if row["level"][-1].isdigit() else None
            if level is not None and lvl != level:
                continue
            if len(row["problem"]) + len(row["solution"]) > max_chars or not row["answer"]:
                continue
            if skipped < offset:
                skipped += 1
                continue
            out.append(Record(id=f"math-{len(out) + offset}", problem=row["problem"],
                              response=f"{row['solution'].strip()}\nThe answer is {row['answer']}",
                              answer=row["answer"], source="math_train", level=lvl, subject=row["type"],
                              method="test"))
            if len(out) >= n:
                break
    return out


def make_run(root: Path, stages: dict, data: dict[str, list[Record] | list[list[Record]]], name: str = "t") -> RunDir:
    """A run dir with the config frozen and the given data stages already complete (a list of
    record lists: one per shard)."""
    cfg = config_from_dict({"run": {"name": name, "root": str(root)}, "stages": stages}, "<test>")
    run = RunDir(root / name)
    run.freeze_config(dump_config(cfg))
    for stage, recs in data.items():
        shards = recs if recs and isinstance(recs[0], list) else [recs]
        for i, part in enumerate(shards):
            write_jsonl(run.shard_path(stage, i), part)
            run.mark_done(stage, i, {"records": len(part)})
    return run


def run_stage(run: RunDir, stage: str) -> None:
    """Every shard of a stage through the real worker, in this process."""
    from skymath.worker import run_shard

    for i in range(run.load_config().stages[stage].num_shards):
        assert run_shard(run.root, stage, i) == 0, (stage, i)


def log_history(run: RunDir, stage: str) -> list[dict]:
    return json.loads((run.work_dir(stage, 0) / "log_history.json").read_text())["log_history"]


def data_stage(num_shards: int = 1) -> dict:
    """A stand-in data stage (its output is written by make_run)."""
    return {"kind": "support.stage_emit", "num_shards": num_shards, "params": {"records_per_shard": 0}}


def one_thread():
    """Pin torch to one thread for a test (2 shared cores: OpenMP spinning under load is 10x slower)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    return old


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TORCH_EXTENSIONS_DIR=str(Path.home() / ".cache" / "skymath" / "torch_extensions"))
    env.update(extra)
    return env


def load_state(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))
