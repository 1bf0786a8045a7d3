"""Typed params of the synthesis methods (light: pydantic only, imported by the stage module)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from skymath.config.base import Strict

EVOL_STRATEGIES = ("rewrite", "add_constraints", "deepen", "concretize", "increase_reasoning")
METAMATH_SUBS = ("answer_aug", "rephrase", "fobar", "self_verification")


class MetaMathParams(Strict):
    # samples per seed for each sub-method (MetaMath balances the four)
    samples: dict[str, int] = Field(default_factory=lambda: {s: 1 for s in METAMATH_SUBS})

    @field_validator("samples")
    @classmethod
    def _subs(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if k not in METAMATH_SUBS:
                raise ValueError(f"unknown MetaMath sub-method {k!r} (known: {', '.join(METAMATH_SUBS)})")
            if n < 0:
                raise ValueError(f"samples.{k}: must be >= 0")
        return v


class EvolParams(Strict):
    trajectories: int = Field(1, ge=0)  # evolution chains per seed
    max_steps: int = Field(5, ge=1, le=10)  # depth of each chain (WizardMath: up to 5)
    # relative weights of the five strategies (choice per step is a deterministic hash)
    strategies: dict[str, float] = Field(default_factory=lambda: {s: 1.0 for s in EVOL_STRATEGIES})

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: dict[str, float]) -> dict[str, float]:
        for k, w in v.items():
            if k not in EVOL_STRATEGIES:
                raise ValueError(f"unknown Evol strategy {k!r} (known: {', '.join(EVOL_STRATEGIES)})")
            if w < 0:
                raise ValueError(f"strategies.{k}: weight must be >= 0")
        if not any(w > 0 for w in v.values()):
            raise ValueError("at least one strategy needs a positive weight")
        return v


class XwinParams(Strict):
    samples: int = Field(1, ge=0)  # refined questions per seed


MixMode = Literal["split", "all"]
