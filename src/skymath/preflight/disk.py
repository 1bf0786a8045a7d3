"""The run root: writable by this user, and big enough. The estimate is the synthesis output
(records, the response cache, the decontaminated copy and the tokenized copy: ~16 bytes per
completion token at the high end of `skymath estimate`) plus the SFT checkpoints at their peak
(`skymath.train.footprint`: checkpoint size x (kept + 1) + the final model, per stage in turn)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from skymath.preflight.problems import Findings

BYTES_PER_COMPLETION_TOKEN = 16


def existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def fmt(n: float) -> str:
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def writable(dir_: Path) -> str | None:
    """None if a file can be created in dir_, else why not."""
    if not os.access(dir_, os.W_OK | os.X_OK):
        return "no write permission"
    try:
        with tempfile.NamedTemporaryFile(dir=dir_, prefix=".skymath-check-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def synth_output_bytes(cfg: Any) -> tuple[int, str]:
    if not any(s.kind == "synth" for s in cfg.stages.values()):
        return 0, "no synthesis"
    try:  # 4 characters per token: the prompt count does not matter here, and a tokenizer costs seconds
        from skymath.synth.estimate import estimate_stage

        rows = [estimate_stage(cfg, name, cfg.run_dir, lambda s: max(1, len(s) // 4))[0].__dict__
                for name, spec in cfg.stages.items() if spec.kind == "synth"]
    except Exception as e:  # noqa: BLE001 - the estimate is best effort; say why it is missing
        return 0, f"synthesis output not estimated ({type(e).__name__}: {str(e)[:80]})"
    tokens = sum(int(r.get("completion_tokens_high", 0)) for r in rows)
    return tokens * BYTES_PER_COMPLETION_TOKEN, f"synthesis ~{fmt(tokens * BYTES_PER_COMPLETION_TOKEN)}"


def sft_bytes(cfg: Any) -> tuple[int, str]:
    if not any(s.kind == "sft" for s in cfg.stages.values()):
        return 0, "no SFT"
    try:
        from skymath.train.footprint import disk_needed_bytes, sft_footprints
    except ImportError:
        return _own_sft_estimate(cfg)
    fps = sft_footprints(cfg)
    need = disk_needed_bytes(fps)
    detail = ", ".join(f"{x.stage} {fmt(x.checkpoint_bytes)} x {x.keep + 1}" for x in fps if x.checkpoint_bytes)
    unknown = [x.stage for x in fps if x.checkpoint_bytes is None]
    text = f"SFT checkpoints ~{fmt(need)} ({detail})"
    if unknown:
        text += f"; not estimated: {', '.join(unknown)}"
    return need, text


def _own_sft_estimate(cfg: Any) -> tuple[int, str]:
    """Without skymath.train.footprint: 16 bytes/parameter (ZeRO, bf16, Adam) x (keep + 1)."""
    known = {"mistralai/Mistral-7B-v0.1": 7.24e9, "meta-llama/Llama-2-7b-hf": 6.74e9,
             "deepseek-ai/deepseek-math-7b-base": 6.91e9, "tiny:smollm2": 1.35e8}
    need = 0
    for spec in cfg.stages.values():
        if spec.kind == "sft":
            n = known.get(spec.params.model, 7e9)
            need = max(need, int(16 * n * (spec.params.keep_checkpoints + 1)))
    return need, f"SFT checkpoints ~{fmt(need)} (16 bytes/parameter)"


def check_disk(cfg: Any, run_dir: Path) -> Findings:
    f = Findings()
    root = Path(run_dir)
    base = existing_ancestor(root)
    if not base.is_dir():
        f.add("disk", "-", f"run directory {root}: {base} is not a directory", "set run.root to a directory")
        return f
    why = writable(base)
    if why:
        f.add("disk", "-", f"run directory {root} cannot be written ({base}: {why})",
              "set run.root to a directory you can write (on a shared file system the compute nodes see)")
        return f
    out_b, out_text = synth_output_bytes(cfg)
    sft_b, sft_text = sft_bytes(cfg)
    need = out_b + sft_b
    free = shutil.disk_usage(base).free
    f.note(f"disk: needs ~{fmt(need)} ({out_text}; {sft_text}); {fmt(free)} free under {base}")
    if need > free:
        f.add("disk", "-", f"the run needs ~{fmt(need)} ({out_text}; {sft_text}) but {base} has {fmt(free)} free",
              "put run.root on a larger file system (project/scratch), lower keep_checkpoints, or free space")
    return f
