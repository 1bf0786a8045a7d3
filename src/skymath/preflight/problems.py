"""What a preflight check finds: a `Problem` (stage, what is wrong, how to fix it) or a `Note`
(a fact worth printing in the summary, e.g. an array split at MaxArraySize)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One row of the table `skymath check` prints. `kind` is the class of problem (cluster,
    limits, secrets, images, inputs, sft, disk) so tests and users can filter by it."""

    kind: str
    stage: str  # a stage name, several joined with ", ", or "-" for the run as a whole
    problem: str
    fix: str


@dataclass
class Findings:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, stage: str, problem: str, fix: str) -> None:
        p = Problem(kind, stage, problem, fix)
        if p not in self.problems:
            self.problems.append(p)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def extend(self, other: Findings) -> None:
        for p in other.problems:
            if p not in self.problems:
                self.problems.append(p)
        for n in other.notes:
            self.note(n)


def join_stages(stages: list[str], limit: int = 4) -> str:
    """'a, b, c' (at most `limit` names, then '+N more')."""
    uniq = list(dict.fromkeys(stages))
    if len(uniq) <= limit:
        return ", ".join(uniq)
    return ", ".join(uniq[:limit]) + f" +{len(uniq) - limit} more"


def merged(problems: list[Problem]) -> list[Problem]:
    """Rows that differ only in their stage become one row naming every stage."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for p in problems:
        groups.setdefault((p.kind, p.problem, p.fix), []).extend(s.strip() for s in p.stage.split(","))
    return [Problem(kind, join_stages(stages), problem, fix) for (kind, problem, fix), stages in groups.items()]
