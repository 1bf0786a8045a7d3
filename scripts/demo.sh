#!/usr/bin/env bash
# Set up .venv and run the main job: the whole two-stage recipe, small, on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/skymath run launch/demo.yaml "$@"
