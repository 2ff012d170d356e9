"""Search strategies: drivers that hand the campaign one `Scheduler` per run.

A `Scheduler` (emu.engine.scheduler) makes the choices of one run; a `Strategy` decides which
schedulers to try, in what order, and when to stop, like Shuttle's `Scheduler` trait with
its `new_execution`. Every strategy has the same entry point, `explore(run_one, budget)`:
it calls `run_one(scheduler)` once per run and gets back a `Result`; it stops when a result
hits the campaign's target, when the budget of runs is spent, or when it has nothing left
to try (only `exhaustive` can run out). emu/search/registry.py names them.

`notes` collects what the strategy wants to tell the user (PCT's per-run guarantee,
exhaustive's interleaving count and "verified within bound k"); `stats` the same as data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from emu.engine.scheduler import Scheduler


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


@dataclass(frozen=True)
class Settings:
    """What a campaign tells every strategy; each takes the fields it uses."""

    seed: int = 0
    #: Hypothesis' example database directory (None: none).
    database: Path | None = None
    #: PCT's bug depth d.
    depth: int = 3
    #: Exhaustive's and dpor's preemption bound (None: none; exhaustive then runs dpor).
    preemptions: int | None = 2
    #: Agents of the scenario (vCPU tasks and the host), for PCT's guarantee.
    agents: int = 3
    #: dpor: the file its frontier is saved to and resumed from (None: none).
    checkpoint: Path | None = None
    #: dpor: may a task that retries be taken as stuck (retry-assume)? Not when a retry's
    #: TSC can come from the attempt before (`--speculative-tsc`).
    assume_retries: bool = True


class Strategy:
    """A search strategy; subclasses set `name` and implement `explore`."""

    name: ClassVar[str]
    #: Does the strategy use `Result.score`? (It costs the campaign a little per run.)
    wants_score: ClassVar[bool] = False
    #: Runs it makes when the caller gives no budget.
    default_budget: ClassVar[int] = 10_000

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.stats: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Strategy:
        """The strategy set up for a campaign."""
        raise NotImplementedError

    def explore(self, run_one: RunOne, budget: int) -> None:
        """Run schedules through `run_one` until a hit, `budget` runs, or exhaustion."""
        raise NotImplementedError
