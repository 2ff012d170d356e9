"""Search strategies: drivers that hand the campaign one `Scheduler` per run.

A `Scheduler` (emu.engine.scheduler) makes the choices of one run; a `Strategy` decides which
schedulers to try, in what order, and when to stop, like Shuttle's `Scheduler` trait with
its `new_execution`. Every strategy has the same entry point, `explore(run_one, budget)`:
it calls `run_one(scheduler)` once per run and gets back a `Result`; it stops when a result
hits the campaign's target, when the budget of runs is spent, or when it has nothing left
to try (only `exhaustive` can run out).

`notes` collects what the strategy wants to tell the user (PCT's per-run guarantee,
exhaustive's interleaving count and "verified within bound k"); `stats` the same as data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from emu.engine.scheduler import Scheduler

HOST = "host"
_TASK = re.compile(r"t\d+$")


def is_task(label: str) -> bool:
    """Is `label` a task's option ("t0", "t1", ...), as opposed to the host or an action?"""
    return bool(_TASK.match(label))


def is_agent_point(options: tuple[str, ...]) -> bool:
    """Does this decision pick who runs next (tasks, host), rather than an action?

    Action points offer something else: option 0 is "nothing happens" (`stay`, `tsc`) and
    the others are events such as a guest task migration (`t0>v1`) or a speculative TSC
    (`tsc-3`).
    """
    return all(o == HOST or is_task(o) for o in options)


@dataclass(frozen=True)
class Result:
    """What a strategy learns from one run."""

    #: The run violates the campaign's target oracle: the strategy must stop.
    hit: bool
    #: Decision points the run had.
    points: int
    #: Size of the worst timestamp error of the run in ns (positive: a regression or an
    #: inconsistency of that size; negative: the closest margin), or None with no signal.
    score: float | None = None


RunOne = Callable[[Scheduler], Result]


class Strategy(Protocol):
    name: str
    notes: list[str]
    stats: dict[str, Any]
    #: Does the strategy use `Result.score`? (It costs the campaign a little per run.)
    wants_score: bool

    def explore(self, run_one: RunOne, budget: int) -> None:
        """Run schedules through `run_one` until a hit, `budget` runs, or exhaustion."""
        ...
