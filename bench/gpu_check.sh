#!/usr/bin/env bash
# One prepared GPU session: versions, SFT hot loop (packed vs padded), HF eval generation.
# Expects wheels of skymath's light deps in .whl/ and a config-only SmolLM2 dir + GSM8K test in .gpu/.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
python3 -c "import flash_attn; print('flash_attn', flash_attn.__version__)" 2>/dev/null | tee -a "$OUT/gpu.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src PYTHONUNBUFFERED=1
timeout 240 python3 bench/sft_gpu.py --model .gpu/smollm2-config --steps 150 2>&1 | grep -v Warning | tee "$OUT/sft_gpu.log"
timeout 180 python3 bench/eval_gpu.py --model .gpu/smollm2-config --data .gpu/gsm8k_test.jsonl --n 256 --batch 64 \
  --max-new-tokens 256 2>&1 | grep -v Warning | tee "$OUT/eval_gpu.log"
