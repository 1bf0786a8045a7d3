#!/usr/bin/env bash
# One prepared GPU session (one GPU, no network): versions, THE sft stage (tokenize stage, then sft
# under torchrun with DeepSpeed ZeRO-2, bf16, a ~0.5B Llama, packed vs padded), HF eval generation.
#
#   on the dev machine:  bash bench/gpu_prepare.sh        # wheels -> .whl/, tokenizer -> .gpu/tokenizer
#   on the GPU machine:  bash bench/gpu_check.sh          # logs and RESULT lines in $OUT (default /tmp/gpu_out)
#
# Knobs: SFT_STEPS (60), SFT_SIZE (0.5b | tiny), SFT_SAMPLES (2000), SFT_DEVICE (cuda | cpu: a plumbing run
# without a GPU), PYTHON (python3).
# Packing uses flash-attn varlen when a flash_attn wheel for this torch is in .whl/ (or installed);
# otherwise the packed run uses the per-example SDPA fallback and the stage's default is padded.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
STEPS=${SFT_STEPS:-60}
SIZE=${SFT_SIZE:-0.5b}
DEVICE=${SFT_DEVICE:-cuda}
SAMPLES=${SFT_SAMPLES:-2000}
PY=${PYTHON:-python3}
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
"$PY" -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
if [ -f .whl/needed.txt ]; then
  # only what this machine lacks: names without versions, so installed packages (torch, numpy, ...) stay
  "$PY" -m pip install -q --no-index --no-deps --find-links .whl $(cat .whl/needed.txt) 2>&1 | tail -3
  ls .whl/flash_attn-*.whl >/dev/null 2>&1 && "$PY" -m pip install -q --no-index --no-deps .whl/flash_attn-*.whl 2>&1 | tail -3
fi
if "$PY" -c "import flash_attn" 2>/dev/null; then
  "$PY" -c "import flash_attn; print('flash_attn', flash_attn.__version__)" | tee -a "$OUT/gpu.txt"
else
  echo "flash_attn: not installed (packed = per-example SDPA fallback; the sft stage defaults to padded)" | tee -a "$OUT/gpu.txt"
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TOK=""
[ -d .gpu/tokenizer ] && TOK="--tokenizer .gpu/tokenizer"
# the sft stage, ZeRO-2, packed then padded: RESULT tokens_per_s=... mfu=... packed_vs_padded=...
timeout 480 "$PY" bench/sft_gpu.py --stage --device "$DEVICE" --size "$SIZE" --steps "$STEPS" --samples "$SAMPLES" $TOK \
  --work /tmp/skymath-gpu-check 2>&1 | grep -v Warning | tee "$OUT/sft_stage.log"
if [ "$DEVICE" = cuda ] && [ -f .gpu/gsm8k_test.jsonl ]; then
  # equal work per batch size: the same 32 prompts at batch 1, 8 and 32 (issue 16)
  timeout 240 "$PY" bench/eval_gpu.py --model .gpu/smollm2-config --data .gpu/gsm8k_test.jsonl --n 32 --batches 1,8,32 \
    --max-new-tokens 96 2>&1 | grep -v Warning | tee "$OUT/eval_gpu.log"
  # the same prompts through the hf backend (batched) and the vllm backend (issue 13): RESULT vllm_vs_hf=...
  if "$PY" -c "import vllm" 2>/dev/null; then
    timeout 420 "$PY" bench/eval_backends.py --device cuda --model .gpu/smollm2-config --data .gpu/gsm8k_test.jsonl \
      --n 256 --max-new-tokens 256 --batch-size 64 2>&1 | grep -v Warning | tee "$OUT/eval_backends.log"
  else
    echo "eval_backends: vllm is not installed on this GPU machine (no network here; its CUDA wheel is ~336 MB)" \
      | tee "$OUT/eval_backends.txt"
  fi
fi
grep -h '^RESULT' "$OUT"/*.log
