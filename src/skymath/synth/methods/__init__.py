"""The three augmentation methods of the recipe: MetaMath, Evol-Instruct, Xwin self-correction."""

from __future__ import annotations

from skymath.synth.methods.base import Method, Outcome, Settings, Unit


def get_methods() -> dict[str, type[Method]]:
    from skymath.synth.methods.evol import Evol
    from skymath.synth.methods.metamath import MetaMath
    from skymath.synth.methods.xwin import Xwin

    return {"metamath": MetaMath, "evol": Evol, "xwin": Xwin}


__all__ = ["Method", "Outcome", "Settings", "Unit", "get_methods"]
