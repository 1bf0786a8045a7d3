#!/bin/bash
# Rendered by skymath from slurm/gpu-array.sh.j2 -- every value below is shell-quoted, and no
# value holds a control character (a newline would end #SBATCH parsing).
#SBATCH --job-name=skywork-mistral-7b.coreset
#SBATCH --output=/RUNS/skywork-mistral-7b/logs/coreset/%A_%a.out
#SBATCH --open-mode=append
#SBATCH --chdir=/CWD
#SBATCH --export=ALL
#SBATCH --array=0
#SBATCH --partition=gpu-a100
#SBATCH --account=mathlab
#SBATCH --qos=normal
#SBATCH --constraint=a100
#SBATCH --time=08:00:00
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=65536M
#SBATCH --gres=gpu:1
#SBATCH --signal=B:USR2@900
#SBATCH --requeue
#SBATCH --mail-type=FAIL
# Time limit near: Slurm sends SIGUSR2 to this script (--signal=B:USR2@lead; not USR1, which
# NCCL uses). The trap only forwards it to the job step (training checkpoints, synthesis keeps
# its partial output) and notes it; what happens next depends on how the step exits (see the
# end of the script). Installed first, so a signal during setup is not fatal.
skymath_child=""
skymath_signalled=0
skymath_on_usr2() {
  skymath_signalled=1
  echo "[skymath] $(date '+%F %T') SIGUSR2: time limit near, stopping the step" >&2
  if [ -n "$skymath_child" ]; then
    kill -USR2 "$skymath_child" 2>/dev/null || true
  fi
}
trap skymath_on_usr2 USR2
# shape: gpu-array -- one shard per array task; the shard of task $SLURM_ARRAY_TASK_ID is that line of
# this launch's shard list file.
set -o pipefail
echo "[skymath] $(date '+%F %T') job ${SLURM_JOB_ID:-?} array ${SLURM_ARRAY_JOB_ID:--}_${SLURM_ARRAY_TASK_ID:--} restart ${SLURM_RESTART_COUNT:-0} on $(hostname) stage:" coreset >&2
module purge
module load apptainer/1.3.4
module load cuda/12.4
export SKYMATH_RUN_DIR=/RUNS/skywork-mistral-7b
# one BLAS/OpenMP thread per allocated CPU (oversubscribed torch threads are 5x slower)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
# since Slurm 22.05 srun does not inherit --cpus-per-task from the job: every srun in this job
# (the gpu-multinode step, site setup lines) gets the job's CPUs per task
export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"
export OMP_NUM_THREADS=1
export TOKENIZERS_PARALLELISM=false
export HF_HOME="/project/mathlab/hf-cache"
export SKYMATH_SCRATCH="/scratch/$USER/skymath"
if [ -n "${SKYMATH_SCRATCH:-}" ]; then
  mkdir -p "$SKYMATH_SCRATCH" && export TMPDIR="$SKYMATH_SCRATCH"
fi
# site setup lines from the cluster profile
umask 0027
# The job step (container-wrapped by the cluster profile's runtime). It runs in the background
# so the USR2 trap can fire while we wait for it.
bash -c 'for _v in HF_HUB_OFFLINE HF_DATASETS_OFFLINE TRANSFORMERS_OFFLINE OMP_NUM_THREADS TOKENIZERS_PARALLELISM PYTHONUNBUFFERED HTTP_PROXY HTTPS_PROXY NO_PROXY ALL_PROXY http_proxy https_proxy no_proxy all_proxy SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE CUDA_VISIBLE_DEVICES MASTER_ADDR MASTER_PORT OPENAI_API_KEY HF_TOKEN WANDB_API_KEY TMPDIR ${!SLURM_@} ${!SKYMATH_@} ${!NCCL_@} ${!TORCH_NCCL_@} ${!TORCHELASTIC_@}; do if [ -n "${!_v+x}" ]; then export "APPTAINERENV_$_v=${!_v}"; fi; done; export APPTAINERENV_TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-${SKYMATH_NODE_CACHE:-/tmp/skymath-$(id -u)}/triton}" APPTAINERENV_TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-${SKYMATH_NODE_CACHE:-/tmp/skymath-$(id -u)}/torch_extensions}" APPTAINERENV_TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${SKYMATH_NODE_CACHE:-/tmp/skymath-$(id -u)}/inductor}" APPTAINERENV_VLLM_CACHE_ROOT="${VLLM_CACHE_ROOT:-${SKYMATH_NODE_CACHE:-/tmp/skymath-$(id -u)}/vllm}"; exec "$@"' skymath-env apptainer exec --nv --cleanenv --bind /RUNS/skywork-mistral-7b,/DATA,/project/mathlab/hf-cache,/project/mathlab,/scratch --env PYTHONNOUSERSITE=1 --env HF_HOME=/project/mathlab/hf-cache /project/mathlab/images/skymath-eval.sif python3 -m skymath.worker /RUNS/skywork-mistral-7b coreset @/RUN/slurm/LAUNCH/coreset.p0.shards &
skymath_child=$!
if [ "$skymath_signalled" = 1 ]; then
  kill -USR2 "$skymath_child" 2>/dev/null || true  # the signal came before the step started
fi
# `wait` returns >128 when a trapped signal interrupts it while the step still runs: wait again.
# Bash keeps a finished step's status, so a last `wait` returns it even if the step ended just
# after an interrupted wait (127 only if bash no longer knows it).
skymath_wait() {
  local rc=0 again=0
  wait "$skymath_child" || rc=$?
  while [ "$rc" -gt 128 ] && kill -0 "$skymath_child" 2>/dev/null; do
    rc=0
    wait "$skymath_child" || rc=$?
  done
  if [ "$rc" -gt 128 ]; then
    wait "$skymath_child" || again=$?
    [ "$again" -ne 127 ] && rc=$again
  fi
  return "$rc"
}
skymath_rc=0
skymath_wait || skymath_rc=$?
echo "[skymath] $(date '+%F %T') step exited with $skymath_rc" >&2
# A step that finished (exit 0) ends the job with 0, signal or not: no requeue, and the finished
# shard is never marked FAILED. Only a step stopped by the signal (143 from the worker or the
# launcher, 140 if USR2 killed it) is requeued to continue where it stopped; once the requeues are
# used up the job fails (its shard is not done). Any other exit is a real failure: no requeue.
if [ "$skymath_signalled" = 1 ] && { [ "$skymath_rc" -eq 143 ] || [ "$skymath_rc" -eq 140 ]; }; then
  # this task only: the array's own id (SLURM_ARRAY_JOB_ID, which the last task to start also has
  # as its SLURM_JOB_ID) names the WHOLE array to scontrol, so an array task requeues ARRAY_TASK
  skymath_self="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"
  skymath_self="${skymath_self:-$SLURM_JOB_ID}"
  if [ "${SLURM_RESTART_COUNT:-0}" -lt 3 ]; then
    echo "[skymath] requeueing job $skymath_self (restart ${SLURM_RESTART_COUNT:-0} of" 3")" >&2
    if scontrol requeue "$skymath_self"; then
      exit 0
    fi
    echo "[skymath] scontrol requeue failed: the job ends stopped (resubmit to continue)" >&2
  else
    echo "[skymath] stopped by the time limit and no requeue left (max_requeues" 3"): resubmit to continue" >&2
  fi
fi
exit "$skymath_rc"
