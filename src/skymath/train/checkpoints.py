"""Checkpoints a cluster can afford: a completion file, keep-last-k, deletions off the critical path,
and the optimizer states dropped once the stage has saved its model.

A 7B ZeRO-2 checkpoint is ~110 GB (bf16 weights + fp32 master weights, Adam m and v). Deleting
one takes minutes on a parallel file system; done by rank 0 between two barriers it would stall
every GPU. So a checkpoint leaving the keep window is *renamed* into `checkpoints/.trash/` (one
metadata operation, instant) and a background thread deletes it while training goes on; what a
crash leaves in the trash is deleted at the next start.

After the stage succeeded (final HF model saved and `final.json` written), the training state of
the kept checkpoints -- optimizer, scheduler, RNG, DeepSpeed `global_step*/` partitions -- is
removed; their model weights, config and trainer state stay, so intermediate models can still be
evaluated.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
TRASH = ".trash"
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
# files/dirs of a checkpoint that only resuming needs (HF Trainer + DeepSpeed names)
TRAINING_STATE = re.compile(r"^(optimizer\.pt|optimizer\.bin|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth|"
                            r"global_step\d+|latest|zero_to_fp32\.py|training_args\.bin)$")


def step_of(path: Path) -> int:
    m = CKPT_RE.match(path.name)
    return int(m.group(1)) if m else -1


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints with their completion file, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if CKPT_RE.match(p.name) and (p / COMPLETE).exists()]
    return sorted(found, key=step_of)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = complete_checkpoints(ckpt_dir)
    return done[-1] if done else None


def mark_complete(ckpt: Path, step: int) -> None:
    from skymath.records import atomic_write_text

    atomic_write_text(ckpt / COMPLETE, json.dumps({"step": step, "time": time.time()}) + "\n")


class Deleter:
    """Moves paths into `<root>/.trash` at once and deletes them in a daemon thread."""

    def __init__(self, root: Path) -> None:
        self.trash = Path(root) / TRASH
        self._q: queue.Queue[Path | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="skymath-ckpt-delete", daemon=True)
        self._thread.start()
        if self.trash.is_dir():  # left over by a crash or a stop: finish deleting it
            for p in self.trash.iterdir():
                self._q.put(p)

    def _work(self) -> None:
        while True:
            p = self._q.get()
            if p is None:
                return
            t0 = time.time()
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            log.info("deleted %s in %.1fs (background)", p.name, time.time() - t0)

    def discard(self, path: Path) -> None:
        """Rename `path` into the trash (instant) and queue its deletion."""
        self.trash.mkdir(parents=True, exist_ok=True)
        dest = self.trash / f"{path.parent.name}.{path.name}.{time.time_ns()}"
        try:
            path.rename(dest)
        except FileNotFoundError:
            return
        self._q.put(dest)

    def join(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is deleted (end of the stage)."""
        self._q.put(None)
        self._thread.join(timeout)


def remove_incomplete(ckpt_dir: Path, deleter: Deleter) -> list[str]:
    """At start: any checkpoint without its completion file is a half-written leftover."""
    gone = []
    for p in ckpt_dir.iterdir() if ckpt_dir.is_dir() else []:
        if CKPT_RE.match(p.name) and not (p / COMPLETE).exists():
            deleter.discard(p)
            gone.append(p.name)
    return gone


def rotate(ckpt_dir: Path, keep: int, deleter: Deleter) -> list[str]:
    """Keep the newest `keep` complete checkpoints; discard older ones (and older incomplete ones)."""
    done = complete_checkpoints(ckpt_dir)
    keep_set = set(done[-keep:])
    newest = step_of(done[-1]) if done else -1
    gone = []
    for p in ckpt_dir.iterdir() if ckpt_dir.is_dir() else []:
        if not CKPT_RE.match(p.name) or p in keep_set:
            continue
        if (p / COMPLETE).exists() or step_of(p) < newest:
            deleter.discard(p)
            gone.append(p.name)
    return gone


def strip_training_state(ckpt_dir: Path, deleter: Deleter) -> list[str]:
    """After success: remove what only resuming needs from every kept checkpoint (weights stay)."""
    gone = []
    for ckpt in complete_checkpoints(ckpt_dir):
        for p in ckpt.iterdir():
            if TRAINING_STATE.match(p.name):
                deleter.discard(p)
                gone.append(f"{ckpt.name}/{p.name}")
    return gone
