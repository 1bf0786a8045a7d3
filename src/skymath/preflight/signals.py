"""Does a stopping step fit in the signal lead? Slurm sends USR2 `signal_lead_s` before the time
limit and kills the job at the limit (after KillWait). A synthesis shard waits `stop_grace_s` for
its in-flight requests, then writes its partial output; training saves a checkpoint within the
profile's `checkpoint_grace` (torchrun's shutdown timeout). Both must end before the limit, with
room for the requeue, or the work of the last interval is lost (and the job is not requeued)."""

from __future__ import annotations

from typing import Any

from skymath.preflight.problems import Findings

MARGIN_S = 30  # writing the partial output / the completion file, and `scontrol requeue`


def check_signal_lead(cfg: Any, profile: Any) -> Findings:
    f = Findings()
    lead = profile.signal_lead_s
    for name, spec in cfg.stages.items():
        grace = getattr(spec.params, "stop_grace_s", None)
        if grace is None or spec.kind == "llm-server":
            continue
        if grace + MARGIN_S > lead:
            f.add("cluster", name, f"params.stop_grace_s {grace:g} s + {MARGIN_S} s to write and requeue does not fit "
                  f"in the profile's signal_lead_s {lead} s: the step is killed at the time limit mid-write",
                  f"lower stages.{name}.params.stop_grace_s to at most {max(0, lead - MARGIN_S)}, or raise "
                  "signal_lead_s in the cluster profile")
    return f
