"""SFT with the transformers Trainer (+ DeepSpeed ZeRO when configured).

Recipe: cross-entropy on response tokens, AdamW with weight decay 0, cosine/linear schedule with
a warm-up ratio, a checked global batch. The data is already tokenized (skymath.train.tokenized):
every rank memory-maps it, so the job starts training at once.

Preemption-safe: at every optimizer step the ranks agree (one all-reduce) on two flags -- a stop
was requested on any rank (SIGTERM/SIGUSR2), or `save_every_minutes` has passed -- and then save
a checkpoint (model, optimizer, scheduler, RNG, trainer state = data position). After a stop,
`TrainingStopped` is raised. A rerun resumes from the newest checkpoint that has its completion
file (written last, after a barrier). Old checkpoints leave the keep window by a rename and are
deleted in the background (skymath.train.checkpoints). The final model + tokenizer are written to
a temp dir and renamed into place; then `final.json` records the result and the optimizer states
of the kept checkpoints are pruned, so a rerun after that point never trains again.

Logged for the trainer: loss, validation loss per eval interval, tokens/s, MFU (on a GPU with a
known peak), to the worker log, TensorBoard, W&B (one run id per stage across requeues), and
`log_history.json` (the report's loss curve).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from skymath.errors import UserError
from skymath.paths import LAUNCH_DIR
from skymath.train.checkpoints import (
    Deleter,
    complete_checkpoints,
    latest_checkpoint,
    mark_complete,
    remove_incomplete,
    rotate,
    strip_training_state,
)
from skymath.train.launch import dist_env
from skymath.train.params import SFTParams, plan_batch

log = logging.getLogger(__name__)

FINAL = "final.json"
LOG_HISTORY = "log_history.json"
WANDB_ID = "wandb_run_id"


class TrainingStopped(Exception):
    """Training stopped on request after saving a checkpoint; rerun to resume."""

    def __init__(self, step: int, checkpoint: str | None) -> None:
        super().__init__(f"stopped at step {step}, checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainJob:
    """Everything one training run needs, independent of the pipeline machinery."""

    params: SFTParams
    model_path: str
    parts: list[Path]  # tokenized parts (skymath.train.tokenized), memory-mapped by every rank
    model_out: Path
    work_dir: Path
    log_dir: Path | None = None
    seed: int = 0
    stop_fn: Callable[[], bool] = field(default=lambda: False)
    run_name: str | None = None


def deepspeed_config(spec: str | None) -> dict | None:
    """null | zero2 | zero3 (launch/deepspeed/) | a JSON path -> the config dict."""
    if not spec:
        return None
    path = LAUNCH_DIR / "deepspeed" / f"{spec}.json" if spec in ("zero2", "zero3") else Path(spec)
    if not path.is_file():
        raise UserError(f"deepspeed: config {path} not found (zero2 | zero3 | a JSON file)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: deepspeed config is not valid JSON: {e.msg}") from None


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    import torch.distributed as dist

    if _dist_ready():
        dist.barrier()


def _reduce(values: list[float], device: Any, op: str = "max") -> list[float]:
    """One all-reduce of a few numbers (max or sum) across ranks; identity without a process group."""
    import torch
    import torch.distributed as dist

    if not _dist_ready():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return [float(x) for x in t.tolist()]


def _write_json(path: Path, data: dict) -> None:
    from skymath.records import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def say(msg: str) -> None:
    """A line in the worker log (stderr), where a trainer on the cluster looks first."""
    import sys

    print(f"[skymath] sft: {msg}", file=sys.stderr, flush=True)


def wandb_setup(work_dir: Path, project: str | None, run_name: str) -> str:
    """One W&B run per stage, resumed across requeues: the id is created once and kept in the
    shard's work dir; wandb.init picks it up from WANDB_RUN_ID with WANDB_RESUME=allow."""
    import uuid

    id_file = work_dir / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.exists() else ""
    if not run_id:
        run_id = uuid.uuid4().hex[:16]
        from skymath.records import atomic_write_text

        atomic_write_text(id_file, run_id + "\n")
    os.environ["WANDB_RUN_ID"] = run_id
    os.environ["WANDB_RESUME"] = "allow"
    os.environ.setdefault("WANDB_DIR", str(work_dir))
    os.environ.setdefault("WANDB_PROJECT", project or "skymath")
    os.environ.setdefault("WANDB_NAME", run_name)
    return run_id


# ---- the run ----------------------------------------------------------------------------------
def run_training(job: TrainJob) -> dict[str, Any]:
    """Train, save the final model + tokenizer at job.model_out, return summary metrics."""
    p = job.params
    env = dist_env()
    ckpt_dir = job.work_dir / "checkpoints"
    final = job.work_dir / FINAL
    done = _read_final(final, p)
    if done is not None and (job.model_out / "config.json").exists():
        # trained and saved by an earlier attempt that stopped before its marker: only finish pruning
        if env.is_main:
            _after_success(ckpt_dir, p)
        say(f"already trained with these params ({final}); not training again")
        return done

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from skymath.train.data import DataSettings, encoded_samples
    from skymath.train.throughput import count_params, dims, peak_tflops
    from skymath.train.tokenized import Fingerprints, TokenizedSplit, check_parts, sum_counts

    cuda = torch.cuda.is_available()
    bf16 = p.bf16 if p.bf16 is not None else (cuda and torch.cuda.is_bf16_supported())
    if bf16 and not cuda:
        log.warning("bf16 requested but no GPU: training in float32")
        bf16 = False
    try:
        micro, accum = plan_batch(p.global_batch_size, env.world_size, p.micro_batch_size, p.grad_accum)
    except ValueError as e:
        raise UserError(f"sft: {e}") from None
    ds_cfg = deepspeed_config(p.deepspeed)
    if ds_cfg is not None and not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    run_name = job.run_name or job.model_out.parent.name
    report_to = [r for r in p.report_to if r != "tensorboard"]
    if "wandb" in p.report_to:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise UserError("sft: report_to includes wandb but the wandb package is not installed")
        if env.is_main:
            say(f"W&B run id {wandb_setup(job.work_dir, p.wandb_project, run_name)} (kept across requeues)")
        else:
            report_to = []
    packing = _effective_packing(cuda, p.packing, p.attn_implementation)
    attn = p.attn_implementation or _default_attn(cuda, packing)

    # ---- data: memory-mapped, never tokenized here ------------------------------------------------
    tokenizer = AutoTokenizer.from_pretrained(job.model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    settings = DataSettings(p.max_length, p.truncation, p.prompt_style)
    metas = check_parts(job.parts, Fingerprints.of(tokenizer, settings), f"sft ({job.model_out.parent.name})")
    train_ds = TokenizedSplit(job.parts, "train", limit=p.max_samples)
    val_ds = TokenizedSplit(job.parts, "val")
    if len(train_ds) == 0:
        raise UserError(f"sft: no training sample in {len(job.parts)} tokenized part(s) "
                        f"(max_length {p.max_length}, truncation {p.truncation})")
    data_stats = {**sum_counts(metas), "samples": len(train_ds), "tokens": train_ds.tokens,
                  "val_samples": len(val_ds), "max_length": p.max_length, "truncation": p.truncation,
                  "prompt_style": p.prompt_style, "parts": len(job.parts)}
    say(f"rank {env.rank}/{env.world_size}: {len(train_ds)} train + {len(val_ds)} validation samples memory-mapped "
        f"from {len(job.parts)} tokenized part(s); samples tokenized by this process: {encoded_samples()}")
    evaluate = len(val_ds) > 0

    # TrainingArguments first: it sets up the process group and, for ZeRO-3, the global DeepSpeed
    # config that makes from_pretrained partition the weights while loading.
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accum,
        learning_rate=p.lr,
        weight_decay=p.weight_decay,
        optim="adamw_torch",
        num_train_epochs=p.epochs,
        max_steps=p.max_steps or -1,
        lr_scheduler_type=p.scheduler,
        warmup_steps=p.warmup_ratio,  # a float < 1 is a ratio of the total steps
        logging_steps=p.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=(p.eval_steps or p.save_steps) if evaluate else None,
        prediction_loss_only=True,
        save_strategy="steps",
        save_steps=p.save_steps,
        save_total_limit=None,  # rotation is ours: only complete checkpoints count, deletions in the background
        bf16=bf16,
        gradient_checkpointing=p.gradient_checkpointing,
        deepspeed=ds_cfg,
        report_to=report_to or "none",
        run_name=run_name,
        seed=job.seed,
        data_seed=job.seed,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if (not packing and p.group_by_length) else "random",
        dataloader_num_workers=p.dataloader_workers,
        use_cpu=not cuda,
        ddp_backend=None if cuda else ("gloo" if env.distributed else None),
        ddp_timeout=p.ddp_timeout,
        disable_tqdm=not env.is_main,
        logging_first_step=True,
    )
    if ds_cfg is not None and env.distributed:
        import deepspeed

        # ZeRO-3 partitions weights inside from_pretrained: DeepSpeed's comm must know the world first
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=p.ddp_timeout))
    deleter = Deleter(ckpt_dir) if env.is_main else None
    if deleter is not None and (gone := remove_incomplete(ckpt_dir, deleter)):
        say(f"discarding half-written checkpoint(s) {', '.join(gone)}")
    if _reduce([float(job.stop_fn())], args.device)[0]:
        raise TrainingStopped(0, None)

    from skymath.train.packing import VARLEN_ATTN, register_varlen_attention

    if attn == VARLEN_ATTN:
        register_varlen_attention()
    model = AutoModelForCausalLM.from_pretrained(job.model_path, dtype=torch.float32, attn_implementation=attn)
    model.config.use_cache = False
    if packing:
        from skymath.train.packing import PackedCollator

        collator: Any = PackedCollator(flash_attn_kwargs=attn.startswith("flash_attention") or attn == VARLEN_ATTN)
    else:
        from skymath.train.packing import PaddedCollator

        collator = PaddedCollator(tokenizer.pad_token_id, pad_to_multiple_of=8 if cuda else None)

    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    layers, hidden = dims(model.config)
    speed = Throughput(n_params=count_params(model), layers=layers, hidden=hidden, world=env.world_size,
                       peak=peak_tflops(device_name) if cuda else None, device=device_name)
    control = _callback(_StepControl, job.stop_fn, p.save_every_minutes)
    callbacks: list[TrainerCallback] = [
        control, _callback(_CheckpointCallback, p.keep_checkpoints, deleter, job.work_dir / LOG_HISTORY),
        _callback(_ProgressCallback, job.work_dir / "progress.json")]
    if "tensorboard" in p.report_to and env.is_main:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        tb_dir = job.log_dir or job.work_dir / "tensorboard"
        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(tb_dir))))

    trainer = _make_trainer(Trainer, speed, env.is_main, train_ds.lengths)(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds if evaluate else None,
        data_collator=collator, processing_class=tokenizer, callbacks=callbacks)
    resume = latest_checkpoint(ckpt_dir)
    if resume is not None:
        say(f"resuming from {resume}")
    say(f"{speed.n_params / 1e6:.1f}M parameters, {env.world_size} process(es) x micro {micro} x accum {accum}, "
        f"{'packed (' + attn + ')' if packing else 'padded'} batches on {device_name}")
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        if env.is_main:
            _write_json(job.work_dir / LOG_HISTORY, {"log_history": trainer.state.log_history})
    seconds = float(result.metrics.get("train_runtime") or time.time() - t0)
    step = trainer.state.global_step
    if control.stopped:
        if deleter is not None:
            deleter.join(timeout=5)  # best effort: a requeue finishes what is left in the trash
        raise TrainingStopped(step, str(ckpt_dir / f"checkpoint-{step}"))

    tokens, sum_sq = _reduce([float(trainer.sky_tokens), float(trainer.sky_sum_sq)], args.device, op="sum")
    _save_final(trainer, tokenizer, job.model_out, env.is_main)
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    tps = tokens / seconds if seconds > 0 else None
    metrics = {
        "model_dir": str(job.model_out),
        "train_loss": round(float(result.training_loss), 6),
        "final_loss": trainer.sky_last_loss,
        "val_loss": evals[-1] if evals else None,
        "best_val_loss": min(evals) if evals else None,
        "steps": step,
        "samples": min(step * p.global_batch_size, math.ceil(len(train_ds) * p.epochs)),
        "tokens": int(tokens),
        "tokens_per_s": round(tps, 1) if tps else None,
        "tokens_per_s_per_device": round(tps / env.world_size, 1) if tps else None,
        "mfu": speed.mfu(tokens, sum_sq, seconds),
        "device": device_name,
        "peak_tflops": speed.peak,
        "params": speed.n_params,
        "resumed_from": str(resume) if resume else None,
        "base_model": job.model_path,
        "world_size": env.world_size,
        "micro_batch_size": micro,
        "grad_accum": accum,
        "global_batch_size": p.global_batch_size,
        "lr": p.lr,
        "data": data_stats,
        "params_sha256": _params_hash(p),
    }
    if env.is_main:
        _write_json(final, metrics)  # from here on a rerun never trains again
        if deleter is not None:
            deleter.join()
        _after_success(ckpt_dir, p)
        kept = [c.name for c in complete_checkpoints(ckpt_dir)]
        metrics["checkpoints_kept"] = kept
        _write_json(final, metrics)
    return metrics  # no barrier: the other ranks exit while rank 0 prunes and writes the marker


def _params_hash(p: SFTParams) -> str:
    import hashlib

    return hashlib.sha256(p.model_dump_json().encode()).hexdigest()[:16]


def _read_final(path: Path, p: SFTParams) -> dict[str, Any] | None:
    """The result of a finished training with the same params, else None (a changed config retrains)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if data.get("params_sha256") == _params_hash(p) else None


def _after_success(ckpt_dir: Path, p: SFTParams) -> None:
    """Drop the optimizer/ZeRO states of the kept checkpoints (the saved HF model stays)."""
    if not p.prune_after_success:
        return
    deleter = Deleter(ckpt_dir)
    gone = strip_training_state(ckpt_dir, deleter)
    deleter.join()
    shutil.rmtree(ckpt_dir / ".trash", ignore_errors=True)
    if gone:
        say(f"pruned training state of kept checkpoints: {len(gone)} item(s)")


@dataclass
class Throughput:
    """Model FLOPs accounting for tokens/s and MFU (skymath.train.throughput)."""

    n_params: int
    layers: int
    hidden: int
    world: int
    peak: float | None
    device: str

    def mfu(self, tokens: float, sum_sq: float, seconds: float) -> float | None:
        from skymath.train.throughput import model_flops

        if not self.peak or seconds <= 0:
            return None
        flops = model_flops(self.n_params, self.layers, self.hidden, tokens, sum_sq)
        return round(flops / seconds / (self.peak * 1e12 * self.world), 4)


def _effective_packing(cuda: bool, packing: bool, attn: str | None) -> bool:
    """Packing on GPU needs flash-attn varlen kernels: measured on an H200, the per-example SDPA
    fallback ran packed rows 3x slower than padded batches (4.6K vs 14.2K tokens/s, SmolLM2-135M),
    so without flash-attn a GPU run falls back to length-grouped padded batches."""
    import importlib.util

    if packing and cuda and attn is None and importlib.util.find_spec("flash_attn") is None:
        log.warning("packing needs flash-attn on GPU (not installed): using length-grouped padded batches")
        return False
    return packing


def _default_attn(cuda: bool, packing: bool) -> str:
    """flash-attn varlen on GPU when installed; else per-example SDPA for packed rows; else SDPA."""
    import importlib.util

    from skymath.train.packing import VARLEN_ATTN

    if cuda and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return VARLEN_ATTN if packing else "sdpa"


def _save_final(trainer: Any, tokenizer: Any, out: Path, is_main: bool) -> None:
    """save_model into a temp dir (collective under ZeRO-3), then rank 0 renames it into place."""
    tmp = out.with_name(f".{out.name}.partial")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    trainer.save_model(str(tmp))
    _barrier()
    if is_main:
        tokenizer.save_pretrained(str(tmp))
        trainer.model.config.use_cache = True
        trainer.model.config.save_pretrained(str(tmp))
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()


def _make_trainer(base: type, speed: Throughput, is_main: bool, lengths: list[int]) -> type:
    """A Trainer that counts real (non-pad) tokens, logs tokens/s and MFU, and samples by length
    from the memory-mapped index (never by reading every sample)."""
    from skymath.train.throughput import format_mfu, sample_lengths

    class SkyTrainer(base):  # type: ignore[misc, valid-type]
        sky_tokens = 0
        sky_sum_sq = 0
        sky_last_loss: float | None = None
        _sky_mark: tuple[float, int, int] | None = None

        def _get_train_sampler(self, train_dataset=None):
            if self.args.train_sampling_strategy == "group_by_length":
                from transformers.trainer_pt_utils import LengthGroupedSampler

                return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                            lengths=lengths)
            return super()._get_train_sampler(train_dataset)

        def training_step(self, model, inputs, num_items_in_batch=None):
            if self._sky_mark is None:
                self._sky_mark = (time.time(), 0, 0)
            lens = sample_lengths(inputs)
            self.sky_tokens += sum(lens)
            self.sky_sum_sq += sum(n * n for n in lens)
            return super().training_step(model, inputs, num_items_in_batch)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:  # every rank logs the training loss at the same step: a collective is safe
                now = time.time()
                tokens, sum_sq = _reduce([float(self.sky_tokens), float(self.sky_sum_sq)], self.args.device, op="sum")
                line = f"step {self.state.global_step}/{self.state.max_steps} loss {logs['loss']:.4f}"
                if self._sky_mark is not None and now > self._sky_mark[0]:
                    dt = now - self._sky_mark[0]
                    tps = (tokens - self._sky_mark[1]) / dt
                    mfu = speed.mfu(tokens - self._sky_mark[1], sum_sq - self._sky_mark[2], dt)
                    logs["tokens_per_s"] = round(tps, 1)
                    logs["tokens_per_s_per_device"] = round(tps / speed.world, 1)
                    if mfu is not None:
                        logs["mfu"] = mfu
                    line += f" tokens/s {tps:,.0f} {format_mfu(mfu, speed.device)}"
                self._sky_mark = (now, int(tokens), int(sum_sq))
                self.sky_last_loss = float(logs["loss"])
                if is_main:
                    say(line)
            if "eval_loss" in logs and is_main:
                say(f"step {self.state.global_step} validation loss {logs['eval_loss']:.4f}")
            super().log(logs, start_time)

    return SkyTrainer


def _callback(mixin: type, *args: Any) -> Any:
    """An instance of `mixin` + TrainerCallback (transformers is imported only when training)."""
    from transformers import TrainerCallback

    return type(mixin.__name__, (mixin, TrainerCallback), {})(*args)


class _StepControl:
    """At each optimizer step, one all-reduce decides for every rank: stop (a signal reached any
    rank: save now, skip evaluation, end) and/or save because `save_every_minutes` has passed."""

    def __init__(self, stop_fn: Callable[[], bool], save_every_minutes: float | None) -> None:
        self.stop_fn = stop_fn
        self.interval = save_every_minutes * 60 if save_every_minutes else None
        self.last_save = time.monotonic()
        self.stopped = False

    def on_train_begin(self, args, state, control, **kw):
        self.last_save = time.monotonic()
        return control

    def on_step_end(self, args, state, control, **kw):
        due = self.interval is not None and time.monotonic() - self.last_save >= self.interval
        stop, due_any = _reduce([float(bool(self.stop_fn())), float(due)], args.device)
        if stop:
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False  # the signal lead is for the checkpoint
            say(f"stop requested: saving checkpoint-{state.global_step} and stopping")
        elif due_any:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kw):
        self.last_save = time.monotonic()
        return control


class _CheckpointCallback:
    """After every rank finished writing a checkpoint: completion file (last), then rotation by
    rename (the deletion runs in rank 0's background thread, not between the barriers)."""

    def __init__(self, keep: int, deleter: Deleter | None, history: Path) -> None:
        self.keep = keep
        self.deleter = deleter
        self.history = history

    def on_save(self, args, state, control, **kw):
        _barrier()
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            mark_complete(ckpt, state.global_step)
            _write_json(self.history, {"log_history": state.log_history})
            if self.deleter is not None:
                rotate(Path(args.output_dir), self.keep, self.deleter)
        _barrier()
        return control


class _ProgressCallback:
    """progress.json in the work dir (step, loss, validation loss, tokens/s): for status pages and tests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: dict[str, Any] = {}

    def on_log(self, args, state, control, logs=None, **kw):
        for k in ("loss", "eval_loss", "tokens_per_s", "mfu"):
            if logs and k in logs:
                self.last[k] = logs[k]
        return control

    def on_step_end(self, args, state, control, **kw):
        if state.is_world_process_zero:
            _write_json(self.path, {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                                    **self.last, "time": time.time()})
        return control
