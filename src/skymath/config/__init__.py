"""Typed pipeline config loaded from YAML (see `load_config`)."""

from skymath.config.llm import LLMConfig
from skymath.config.load import config_from_dict, dump_config, load_config
from skymath.config.schema import PipelineConfig, Resources, StageSpec

__all__ = [
    "LLMConfig",
    "PipelineConfig",
    "Resources",
    "StageSpec",
    "config_from_dict",
    "dump_config",
    "load_config",
]
