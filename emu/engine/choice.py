"""The options a decision point offers, as values: who runs next, or an action.

Agent points offer `RunTask` and `RunHost`; action points offer "nothing happens" as
option 0 (`Stay`, `SpeculativeTsc(0)`) and events after it (`Migrate`, `SpeculativeTsc(k)`).
Each choice has a `label`, its string form, which schedule files and reports use
(`emu.search.schedule` parses it back); nothing else compares labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class RunTask:
    """Let guest task `task` execute its next visible operation."""

    task: int

    @property
    def label(self) -> str:
        return f"t{self.task}"


@dataclass(frozen=True, slots=True)
class RunHost:
    """Let the host model take its next step."""

    @property
    def label(self) -> str:
        return "host"


@dataclass(frozen=True, slots=True)
class Stay:
    """At a migration point: move no task."""

    @property
    def label(self) -> str:
        return "stay"


@dataclass(frozen=True, slots=True)
class Migrate:
    """`--task-migration`: move guest task `task` to vCPU `vcpu` (registers go with it)."""

    task: int
    vcpu: int

    @property
    def label(self) -> str:
        return f"t{self.task}>v{self.vcpu}"


@dataclass(frozen=True, slots=True)
class SpeculativeTsc:
    """`--speculative-tsc`: the unfenced `rdtsc` returns the TSC of `back` steps ago
    (0: the TSC of now, the default)."""

    back: int

    @property
    def label(self) -> str:
        return f"tsc-{self.back}" if self.back else "tsc"


Choice: TypeAlias = RunTask | RunHost | Stay | Migrate | SpeculativeTsc
#: The options of one decision point; option 0 is the default.
Options: TypeAlias = tuple[Choice, ...]
#: The non-default choices of a run: (decision point, choice), in order.
Choices: TypeAlias = tuple[tuple[int, Choice], ...]


def is_agent(choice: Choice) -> bool:
    """Does `choice` pick who runs next (a task or the host), rather than an action?"""
    return choice.__class__ is RunTask or choice.__class__ is RunHost


def is_agent_point(options: Options) -> bool:
    """Does this decision pick who runs next? (Option 0 of an action point is an action.)"""
    return is_agent(options[0])
