"""Load a pipeline config: YAML + overrides -> PipelineConfig with every stage's params typed."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from skymath.config.loader import apply_overrides, read_yaml, validate
from skymath.config.schema import PipelineConfig
from skymath.errors import UserError


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> PipelineConfig:
    """Validate a raw mapping; stage params are validated against their kind's Params model."""
    from skymath.stages import find_stage_module, stage_kinds

    cfg = validate(PipelineConfig, data, source)
    kinds = stage_kinds()
    raw_stages = data.get("stages") or {}
    for name, spec in cfg.stages.items():
        mod = find_stage_module(spec.kind)
        if mod is None:
            close = difflib.get_close_matches(spec.kind, list(kinds), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(kinds))})"
            raise UserError(f"{source}: stages.{name}.kind: unknown stage kind {spec.kind!r}{hint}")
        raw_params = spec.params if spec.params is not None else {}
        if not isinstance(raw_params, dict):
            raise UserError(f"{source}: stages.{name}.params: expected a mapping")
        spec.params = validate(mod.Params, raw_params, source, prefix=("stages", name, "params"), root=data)
        if spec.shape is None:
            spec.shape = getattr(mod, "SHAPE", "cpu-single")
        for dep in spec.depends_on + spec.services:
            if dep not in cfg.stages:
                close = difflib.get_close_matches(dep, list(cfg.stages), n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"{source}: stages.{name}: depends on unknown stage {dep!r}{hint}")
        for svc in spec.services:
            if not getattr(find_stage_module(cfg.stages[svc].kind), "SERVICE", False):
                raise UserError(f"{source}: stages.{name}.services: stage {svc!r} is not a service stage")
        if getattr(mod, "SINGLE_SHARD", False) and spec.num_shards != 1:
            raise UserError(f"{source}: stages.{name}.num_shards: a {spec.kind} stage runs as one shard")
        check = getattr(mod, "check_config", None)
        if check is not None:
            check(cfg, name, source)
    del raw_stages
    from skymath.pipeline.dag import Pipeline

    Pipeline.from_config(cfg, source)  # cycle check up front
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    data = read_yaml(path)
    if not data:
        raise UserError(f"{path}: the config is empty: expected a pipeline (run, stages, ...; see launch/demo.yaml)")
    if overrides:
        apply_overrides(data, overrides)
    cfg = config_from_dict(data, str(path))
    if not cfg.stages:
        raise UserError(f"{path}: stages: no stages defined, nothing would run (see launch/demo.yaml)")
    return cfg


def dump_config(cfg: PipelineConfig) -> str:
    """The resolved config as YAML (what a run directory freezes)."""
    data = cfg.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
