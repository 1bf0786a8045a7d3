"""Stage kinds. Each module here defines one kind:

    KIND = "seeds"                      # the `kind:` in a config
    SHAPE = "cpu-array"                 # default job shape
    class Params(StageParams): ...      # typed params (light imports only!)
    def run(ctx: ShardContext) -> dict | None   # process shard ctx.shard of ctx.num_shards

Optional: SERVICE = True (long-running, e.g. llm-server), SINGLE_SHARD = True,
`check_config(cfg, name, source)` (extra validation at load time, raise UserError),
`after_shard_done(ctx)` (runs under the stage lock after a shard's `.done` is written;
used to merge when the last shard completes), `COOPERATIVE_STOP = True` (the stage polls
ctx.stop_requested() itself instead of being interrupted on SIGTERM/SIGUSR2; after a stop the
worker treats its return as partial unless the returned dict says `"complete": True` — all
its work finished anyway, so the shard is done and the job is not requeued).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

from skymath.config.base import Strict


class StageParams(Strict):
    """Base of every stage's params model."""


@cache
def stage_kinds() -> dict[str, ModuleType]:
    kinds: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        kind = getattr(mod, "KIND", None)
        if kind:
            kinds[kind] = mod
    return kinds


def stage_module(kind: str) -> ModuleType:
    """Built-in kinds by name; a dotted kind (`mypkg.my_stage`) imports a user's stage module."""
    kinds = stage_kinds()
    if kind in kinds:
        return kinds[kind]
    if "." in kind:
        return importlib.import_module(kind)
    raise KeyError(kind)


def find_stage_module(kind: str) -> ModuleType | None:
    try:
        return stage_module(kind)
    except (KeyError, ImportError):
        return None
