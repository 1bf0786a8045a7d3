"""Grader processes with a hard per-pair deadline.

Each worker is a plain `python -m skymath.evaluate.grade_pool` subprocess (JSON lines over
pipes: no pickling, no re-import of the caller's `__main__`, no inherited torch/thread state).
The parent hands a worker a few pairs at a time and watches the clock: a worker still busy with
one pair after `timeout` seconds is killed and replaced by a warm spare, that pair is graded
False and the rest of its chunk goes back into the queue.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence

CHUNK = 8
STARTUP_S = 300.0  # a worker that cannot import sympy within this is broken, not slow
_WARMUP = [("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}"), ("5 \\geq x", "x \\le 5"),
           ("\\sqrt{2}+\\sqrt{8}", "3\\sqrt{2}"), ("\\tan^2(y)+1", "\\sec^2(y)"),
           ("\\begin{pmatrix}1&x\\\\0&1\\end{pmatrix}", "\\begin{pmatrix}1&x\\\\0&1\\end{pmatrix}")]


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skymath.evaluate.grade_pool"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0,
        )
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.pending: deque[int] = deque()
        self.started = 0.0
        self.ready = False  # set by the worker's first line, after imports and warm-up
        self.born = time.monotonic()

    def send(self, job: list) -> None:
        self.proc.stdin.write((json.dumps(job) + "\n").encode())

    def read_lines(self) -> list[str] | None:
        """Complete lines available now; None when the worker has died."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [ln.decode() for ln in lines]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=3)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class GradePool:
    """`processes` grader workers (default: all cores) plus one warm spare for replacements."""

    def __init__(self, processes: int | None = None, startup_s: float = STARTUP_S) -> None:
        self.size = max(1, processes or os.cpu_count() or 1)
        self.startup_s = startup_s
        self._workers: list[_Worker] = []
        self._spare: _Worker | None = None
        self.killed = 0

    def start(self) -> GradePool:
        """Spawn the workers now (they import sympy in the background while the caller works)."""
        self._ensure()
        return self

    def _ensure(self) -> None:
        while len(self._workers) < self.size:
            self._workers.append(_Worker())

    def _replace(self, k: int) -> None:
        self._workers[k].kill()
        self.killed += 1
        self._workers[k] = self._spare or _Worker()
        self._spare = _Worker()

    def grade(self, items: Sequence[tuple], timeout: float = 1.0, progress: bool = False) -> list[bool]:
        """Verdicts for (pred, gold, benchmark) items; a pair over `timeout` seconds is False."""
        self._ensure()
        results: list[bool | None] = [None] * len(items)
        queue: deque[int] = deque(range(len(items)))
        left = len(items)
        soft = timeout * 0.8
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(items), desc="grading", unit="pair", file=sys.stderr, mininterval=1.0, ascii=True)
        chunk = max(1, min(CHUNK, len(items) // (4 * self.size) or 1))

        def finish(idx: int, verdict: bool) -> None:
            nonlocal left
            if results[idx] is None:
                results[idx] = verdict
                left -= 1
                if bar is not None:
                    bar.update(1)

        try:
            while left:
                now = time.monotonic()
                for w in self._workers:
                    if w.ready and not w.pending and queue:
                        ids = [queue.popleft() for _ in range(min(chunk, len(queue)))]
                        w.send([[i, *items[i], soft] for i in ids])
                        w.pending.extend(ids)
                        w.started = now
                busy = [w for w in self._workers if w.pending]
                starting = [w for w in self._workers if not w.ready]
                if not busy and not starting:
                    break
                wait_s = max(0.0, min(w.started for w in busy) + timeout - time.monotonic()) if busy else 1.0
                ready, _, _ = select.select([w.fd for w in busy + starting], [], [], wait_s + 0.001)
                for k, w in enumerate(list(self._workers)):
                    dead = False
                    if w.fd in ready:
                        lines = w.read_lines()
                        if lines is None:
                            dead = True
                        for ln in lines or []:
                            if ln == '"ready"':
                                w.ready = True
                                continue
                            idx, verdict = json.loads(ln)
                            if idx in w.pending:
                                w.pending.remove(idx)
                            finish(idx, bool(verdict))
                            w.started = time.monotonic()
                    if dead and not w.pending:
                        if not w.ready:
                            raise RuntimeError(f"grader process exited with code {w.proc.wait()} before it was ready")
                        self._replace(k)  # died while idle (e.g. OOM-killed): start another
                        continue
                    if not w.ready and not dead and time.monotonic() - w.born > self.startup_s:
                        raise RuntimeError(f"grader process {w.proc.pid} did not start within {self.startup_s:.0f} s")
                    if w.pending and (dead or time.monotonic() - w.started > timeout):
                        finish(w.pending.popleft(), False)
                        queue.extendleft(reversed(w.pending))
                        w.pending.clear()
                        self._replace(k)
        finally:
            if bar is not None:
                bar.close()
        return [bool(v) for v in results]

    def close(self) -> None:
        for w in self._workers + ([self._spare] if self._spare else []):
            w.stop()
        self._workers, self._spare = [], None

    def __enter__(self) -> GradePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: GradePool | None = None


def shared_pool() -> GradePool:
    """One grader process for single `is_equiv` calls, started on first use, closed at exit."""
    global _shared
    if _shared is None:
        _shared = GradePool(1)
        atexit.register(_shared.close)
    return _shared


def _serve() -> None:
    """Worker loop: a JSON list of [idx, pred, gold, benchmark, soft_s] per line in, `[idx, verdict]` lines out."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    import skymath.evaluate.grade as grade

    grade._IN_GRADER = True
    for pred, gold in _WARMUP:  # first use of simplify/N loads much of sympy: not on a timed pair
        grade.equiv_unlimited(pred, gold, "math")
    out.write('"ready"\n')
    for line in sys.stdin:
        if not line.strip():
            continue
        for idx, pred, gold, bench, soft in json.loads(line):
            try:
                v = grade.equiv_soft_limited(pred, gold, bench, soft)
            except Exception:  # noqa: BLE001 - a grader bug on one pair must not kill the pool
                v = False
            out.write(json.dumps([idx, bool(v)]) + "\n")


if __name__ == "__main__":
    _serve()
