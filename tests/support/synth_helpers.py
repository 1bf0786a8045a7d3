"""Shared helpers of the synthesis tests: real seeds, a run directory, a method-aware responder."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from skymath.config import config_from_dict, dump_config
from skymath.paths import default_data_root
from skymath.pipeline.rundir import RunDir


def real_seeds(n_gsm8k: int = 3, n_math: int = 3, math_levels: tuple[int, ...] | None = None) -> list[dict]:
    """The first problems of GSM8K train and MATH train as seed Record dicts (gold answers kept)."""
    root = default_data_root()
    out: list[dict] = []
    with open(root / "gsm8k_train.jsonl", encoding="utf-8") as f:
        for i, line in zip(range(n_gsm8k), f, strict=False):
            row = json.loads(line)
            out.append({"id": f"gsm8k_train/{i}", "problem": row["question"], "answer": row["final"],
                        "source": "gsm8k_train"})
    n = 0
    with gzip.open(root / "math_train.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            if n >= n_math:
                break
            row = json.loads(line)
            level = int(row["level"].split()[-1]) if row["level"][-1].isdigit() else None
            if math_levels is not None and level not in math_levels:
                continue
            out.append({"id": row["unique_id"], "problem": row["problem"], "answer": row["answer"],
                        "source": "math_train", "level": level, "subject": row["type"]})
            n += 1
    return out


def make_run(tmp: Path, seeds: list[dict], synth_params: dict[str, Any], llm: dict[str, Any],
             num_shards: int = 1, name: str = "t", extra_stages: dict[str, Any] | None = None,
             services: list[str] | None = None) -> RunDir:
    """A frozen run directory with a finished seed stage and a `synth` stage ready to run."""
    from skymath.worker import run_shard

    seeds_file = tmp / f"{name}-seeds.jsonl"
    seeds_file.write_text("".join(json.dumps(s) + "\n" for s in seeds), encoding="utf-8")
    stages: dict[str, Any] = {
        "seeds": {"kind": "support.synth_seeds", "params": {"file": str(seeds_file)}},
        "synth": {"kind": "synth", "depends_on": ["seeds"], "num_shards": num_shards,
                  "services": services or [], "params": synth_params},
    }
    stages.update(extra_stages or {})
    cfg = config_from_dict({"run": {"name": name, "root": str(tmp / "runs")}, "llm": llm, "stages": stages})
    run = RunDir(cfg.run_dir)
    run.freeze_config(dump_config(cfg))
    assert run_shard(run.root, "seeds", 0) == 0
    return run


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _between(text: str, start: str, end: str | None) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    i += len(start)
    j = text.find(end, i) if end else -1
    return text[i:j if j >= 0 else None].strip()


def synth_responder(body: dict) -> str:
    """Deterministic well-formed replies to each synthesis prompt (no model needed)."""
    prompt = body["messages"][-1]["content"]
    h = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:6]
    if prompt.startswith("Rephrase the following math problem"):
        problem = _between(prompt, "Problem: ", "\nRephrased problem:")
        return f"Rephrased problem: Put differently ({h}), {problem}"
    if prompt.startswith("I want you to act as a math problem creator"):
        problem = _between(prompt, "Given problem: ", "\nNew problem:")
        return f"A variant {h}: {problem} After that, also compute twice the result."
    if prompt.startswith("You create high-quality math problems"):
        problem = _between(prompt, "Given problem: ", None)
        return (f"### Refined problem\n{problem} (refined {h})\n\n### Verification\nEvery quantity is defined."
                f"\n\n### Verdict\ncorrect\n\n### Corrected problem\n{problem} (refined {h})")
    problem = _between(prompt, "\nProblem: ", "\nSolution:")
    nums = re.findall(r"\d+", problem)
    return f"We read the problem carefully ({h}).\nCombining the quantities gives the result.\nThe answer is {nums[-1] if nums else 7}"


def start_service_worker(run, stage: str, log_path):
    """A service stage's shard 0 as its own worker process (offline, as on a compute node)."""
    import os
    import subprocess
    import sys

    log = open(log_path, "wb")  # noqa: SIM115 - the child writes to it until it is stopped
    return subprocess.Popen([sys.executable, "-m", "skymath.worker", str(run.root), stage, "0"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def stop_service_worker(run, stage: str, proc) -> None:
    """Ask the service to stop (its STOP file), as the stop job does; kill it after 60 s."""
    import subprocess

    if proc.poll() is None:
        (run.service_dir(stage) / "STOP").write_text("")
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
