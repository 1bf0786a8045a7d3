"""skymath: the Skywork-Math recipe as resumable, sharded batch jobs (local or Slurm)."""

__version__ = "0.1.0"
