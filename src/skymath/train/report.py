"""The SFT part of the run report: per sft stage a loss-curve PNG (training loss and validation
loss against the optimizer step) and one summary row (steps, losses, tokens/s, MFU, device,
checkpoints kept). Read from the stage's `.done` marker and `log_history.json`, which survive
requeues (the history is restored from the checkpoint the stage resumed from).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

COLUMNS = ["stage", "steps", "train samples", "val samples", "final train loss", "final val loss", "best val loss",
           "tokens/s", "tokens/s per device", "MFU", "device", "processes", "resumed"]


def _history(run: Any, stage: str) -> list[dict[str, Any]]:
    path = run.work_dir(stage, 0) / "log_history.json"
    try:
        return json.loads(path.read_text()).get("log_history", [])
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def plot_losses(history: list[dict[str, Any]], title: str, path: Path) -> bool:
    """Training and validation loss against the step; False when there is nothing to plot."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    if not train and not val:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="training loss", color="tab:blue", linewidth=1.2)
    if val:
        ax.plot(*zip(*val, strict=True), label="validation loss", color="tab:orange", marker="o", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (response tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _fmt(v: Any, digits: int = 4) -> Any:
    if isinstance(v, float):
        return round(v, digits)
    return "" if v is None else v


def sft_rows(run: Any, cfg: Any) -> list[list[Any]]:
    rows = []
    for name, spec in cfg.stages.items():
        if spec.kind != "sft":
            continue
        m = run.read_marker(run.done_path(name, 0))
        if not m:
            continue
        data = m.get("data") or {}
        mfu = m.get("mfu")
        rows.append([name, m.get("steps"), data.get("samples"), data.get("val_samples"), _fmt(m.get("final_loss")),
                     _fmt(m.get("val_loss")), _fmt(m.get("best_val_loss")), _fmt(m.get("tokens_per_s"), 1),
                     _fmt(m.get("tokens_per_s_per_device"), 1), _fmt(mfu, 3) if mfu is not None else "n/a",
                     m.get("device", ""), m.get("world_size"), "yes" if m.get("resumed_from") else "no"])
    return rows


def sft_section(run: Any, cfg: Any, out: Path) -> list[str]:
    """Markdown lines for report.md; writes sft_summary.csv and loss_<stage>.png into `out`."""
    rows = sft_rows(run, cfg)
    if not rows:
        return []
    md = ["## SFT stages", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    md += ["", "MFU = model FLOPs (6 N per token + causal attention) per second over the devices' dense bf16 "
               "peak; n/a on CPU or a GPU without a known peak. Losses are on response tokens; the validation "
               "slice is held out at tokenize time.", ""]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    w.writerows(rows)
    from skymath.records import atomic_write_text

    atomic_write_text(out / "sft_summary.csv", buf.getvalue())
    for r in rows:
        name = r[0]
        png = out / f"loss_{name}.png"
        if plot_losses(_history(run, name), f"{name}: loss per optimizer step", png):
            md += [f"![loss curve of {name}]({png.name})", ""]
    return md
