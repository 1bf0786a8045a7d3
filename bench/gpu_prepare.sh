#!/usr/bin/env bash
# Prepare, on the dev machine (which reaches PyPI), what bench/gpu_check.sh needs on a GPU machine
# that has only torch + transformers and no network:
#   .whl/             wheels of every package the sft stage path imports (worker, all stage kinds,
#                     Trainer, DeepSpeed) at the versions tested here, for the GPU machine's Python
#   .whl/needed.txt   their names (gpu_check.sh installs only the ones missing there)
#   .gpu/tokenizer    the SmolLM2 tokenizer (the 0.5B check model is random-init from a config)
#   .gpu/smollm2-config, .gpu/gsm8k_test.jsonl   for bench/eval_gpu.py
# Usage: GPU_PYTHON=3.12 bash bench/gpu_prepare.sh   (GPU_PYTHON: the GPU machine's python, default 3.12)
# Both folders are git-ignored: carry them to the GPU machine with the working tree (<= 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GPU_PYTHON=${GPU_PYTHON:-3.12}
mkdir -p .whl .gpu
# which distributions the stage path imports (beyond what a torch + transformers machine has)
"$PY" - 2>/dev/null <<'EOF' | grep -E '^[A-Za-z0-9_.-]+(==.*)?$' > .whl/needed.txt
import importlib.metadata as md
import sys

before = set(sys.modules)
import skymath.worker  # noqa: E401,F401
from skymath.stages import stage_kinds
stage_kinds()  # every worker imports all stage modules: their top-level imports are required
import skymath.stages.tokenize, skymath.train.sft, skymath.train.tokenized  # noqa: E401,F401
mods = {m.split(".")[0] for m in set(sys.modules) - before}
have = {"torch", "transformers", "triton", "numpy", "tokenizers", "safetensors", "huggingface_hub", "regex",
        "requests", "filelock", "packaging", "yaml", "tqdm", "fsspec", "jinja2", "markupsafe", "networkx",
        "sympy", "mpmath", "typing_extensions", "certifi", "idna", "urllib3", "charset_normalizer", "hf_xet",
        "skymath"}
dists = md.packages_distributions()
names = {"accelerate", "deepspeed", "hjson", "msgpack", "py-cpuinfo", "psutil", "einops", "nvidia-ml-py",
         "pydantic"}  # the Trainer and DeepSpeed ZeRO-2 (torch AdamW: no op is compiled)
optional = {"numba", "llvmlite", "scipy"}  # decontam's compiled scan: try/except import, numpy fallback
for m in sorted(mods - have - optional - set(sys.stdlib_module_names)):
    names.update(d for d in dists.get(m, []) if not d.lower().startswith(("nvidia", "torch", "triton")))
for n in sorted(names):
    try:
        print(f"{n}=={md.version(n)}")
    except md.PackageNotFoundError:
        print(f"{n}=={'13.590.48' if n == 'nvidia-ml-py' else ''}".rstrip("="))  # DeepSpeed needs it on CUDA
EOF
echo "[gpu_prepare] $(wc -l < .whl/needed.txt) distributions: $(tr '\n' ' ' < .whl/needed.txt)"
pure=(); binary=()
while read -r req; do
  name=${req%%==*}
  if [ "$name" = deepspeed ]; then "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$req"; continue; fi
  binary+=("$req")
done < .whl/needed.txt
"$PY" -m pip download -q --no-deps --no-cache-dir -d .whl --only-binary=:all: --python-version "$GPU_PYTHON" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --implementation cp "${binary[@]}"
sed -i 's/==.*//' .whl/needed.txt  # names only: what the GPU machine already has stays as it is
"$PY" - <<'EOF'
import shutil
from pathlib import Path

from transformers import AutoTokenizer

from skymath.models import tiny_model_dir
from skymath.paths import default_data_root

src = tiny_model_dir()
AutoTokenizer.from_pretrained(src).save_pretrained(".gpu/tokenizer")
cfg = Path(".gpu/smollm2-config")
cfg.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.suffix != ".safetensors" and f.is_file() and not f.name.startswith("."):
        shutil.copy(f, cfg / f.name)
shutil.copy(default_data_root() / "gsm8k_test.jsonl", ".gpu/gsm8k_test.jsonl")
EOF
du -sh .whl .gpu
total=$(du -sm .whl .gpu | awk '{s+=$1} END {print s}')
[ "$total" -le 64 ] || echo "[gpu_prepare] warning: ${total} MiB > 64 MiB, more than a device run can carry" >&2
