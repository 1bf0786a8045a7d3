"""The stage DAG: dependency checks, cycle detection, stable topological order."""

from __future__ import annotations

from dataclasses import dataclass, field

from skymath.config.schema import PipelineConfig, StageSpec
from skymath.errors import UserError


@dataclass
class Pipeline:
    stages: dict[str, StageSpec]
    order: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, source: str = "<config>") -> Pipeline:
        p = cls(dict(cfg.stages))
        p.order = p._toposort(source)
        return p

    def parents(self, name: str) -> list[str]:
        """Stages that must complete before `name` (afterok); services are not parents."""
        return list(self.stages[name].depends_on)

    def _toposort(self, source: str) -> list[str]:
        indeg = {n: 0 for n in self.stages}
        children: dict[str, list[str]] = {n: [] for n in self.stages}
        for n, s in self.stages.items():
            for d in s.depends_on:
                if d not in self.stages:
                    raise UserError(f"{source}: stages.{n}: depends on unknown stage {d!r}")
                indeg[n] += 1
                children[d].append(n)
        ready = [n for n in self.stages if indeg[n] == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for c in children[n]:
                indeg[c] -= 1
                if indeg[c] == 0:
                    ready.append(c)
        if len(order) != len(self.stages):
            cycle = self._find_cycle({n for n in self.stages if n not in order})
            raise UserError(f"{source}: stages: dependency cycle: {' -> '.join(cycle)}")
        return order

    def _find_cycle(self, left: set[str]) -> list[str]:
        start = sorted(left)[0]
        path = [start]
        seen = {start}
        node = start
        while True:
            nxt = next(d for d in self.stages[node].depends_on if d in left)
            if nxt in seen:
                return path[path.index(nxt):] + [nxt]
            path.append(nxt)
            seen.add(nxt)
            node = nxt

    def descendants(self, name: str) -> list[str]:
        """Every stage that (transitively) depends on `name`, in topological order."""
        out: set[str] = set()
        frontier = [name]
        while frontier:
            cur = frontier.pop()
            for n, s in self.stages.items():
                if cur in s.depends_on and n not in out:
                    out.add(n)
                    frontier.append(n)
        return [n for n in self.order if n in out]

    def check_names(self, names: list[str] | None, source: str = "<config>") -> None:
        """Stage names given on the command line (`--stage`): a typo is an error with a hint."""
        import difflib

        for n in names or []:
            if n not in self.stages:
                close = difflib.get_close_matches(n, list(self.stages), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise UserError(f"{source}: --stage {n}: no such stage ({hint}stages: {', '.join(self.order)})")

    def consumers(self, service: str) -> list[str]:
        return [n for n in self.order if service in self.stages[n].services]

    def is_service(self, name: str) -> bool:
        from skymath.stages import stage_module

        return bool(getattr(stage_module(self.stages[name].kind), "SERVICE", False))
