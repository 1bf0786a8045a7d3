#!/usr/bin/env bash
# Set up .venv, bring up the local Slurm cluster (real slurmctld/slurmd/slurmdbd), run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash slurm/local-cluster.sh up
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
