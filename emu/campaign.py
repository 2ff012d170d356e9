"""A fuzz campaign: run a strategy over a scenario until a violation or the budget, shrink
the violation to a minimal schedule, and save it as a finding."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emu.executor import Executor
from emu.oracles import Violation, judge
from emu.run import Run
from emu.scenario import Scenario
from emu.schedule import Finding, Schedule
from emu.search.base import Default, Scheduler
from emu.search.random import RandomWalk
from emu.search.replay import Replay
from emu.search.shrink import shrink

STRATEGIES = ("hypothesis", "random")


@dataclass
class Outcome:
    scenario: Scenario
    strategy: str
    seed: int
    schedules: int = 0
    finding: Finding | None = None
    path: Path | None = None
    elapsed: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "violation" if self.finding else "pass"


Progress = Callable[[int, int], None]


class Campaign:
    def __init__(self, scenario: Scenario, executor: Executor | None = None) -> None:
        self.scenario = scenario
        self.executor = executor or Executor(scenario)
        self.count = 0
        self.target: str | None = None
        self.best: tuple[Run, list[Violation]] | None = None

    def run(self, scheduler: Scheduler) -> tuple[Run, list[Violation]]:
        run = self.executor.run(scheduler)
        self.count += 1
        return run, judge(run, self.scenario)

    def _hit(self, run: Run, violations: list[Violation]) -> bool:
        """Does this run fail the campaign's target oracle (the first one seen)?"""
        if not violations:
            return False
        if self.target is None:
            self.target = violations[0].oracle
        for v in violations:
            if v.oracle == self.target:
                self.best = (run, violations)
                return True
        return False

    def replay(self, choices: tuple[tuple[int, str], ...]) -> tuple[Run, list[Violation]]:
        return self.run(Replay(choices))

    def fuzz(
        self,
        *,
        strategy: str = "hypothesis",
        seed: int = 0,
        max_schedules: int = 10_000,
        database: Path | None = None,
        progress: Progress | None = None,
    ) -> Outcome:
        out = Outcome(self.scenario, strategy, seed)
        start = time.monotonic()
        try:
            self._search(strategy, seed, max_schedules, database, progress)
        except KeyboardInterrupt:
            out.interrupted = True
            out.notes.append("interrupted: the finding (if any) is the smallest seen so far")
        out.schedules = self.count
        if self.best is not None:
            choices = tuple(self.best[0].choices)
            if strategy != "hypothesis" and not out.interrupted:
                choices = self._shrink(choices)
            run, violations = self.replay(choices)
            v = next((x for x in violations if x.oracle == self.target), None)
            if v is not None:
                out.finding = Finding(
                    Schedule(
                        self.scenario,
                        self.executor.image.sha256,
                        tuple(run.choices),
                        seed,
                        strategy,
                    ),
                    v.oracle,
                    v.message,
                    v.reads,
                    {"schedules": out.schedules, "decision_points": run.points, "steps": run.steps},
                )
        out.elapsed = time.monotonic() - start
        return out

    def _shrink(self, choices: tuple[tuple[int, str], ...]) -> tuple[tuple[int, str], ...]:
        def fails(c: tuple[tuple[int, str], ...]) -> bool:
            _, vs = self.replay(c)
            return any(v.oracle == self.target for v in vs)

        return shrink(choices, fails)

    def _search(
        self,
        strategy: str,
        seed: int,
        budget: int,
        database: Path | None,
        progress: Progress | None,
    ) -> None:
        if strategy == "random":
            for i in range(budget):
                run, vs = self.run(RandomWalk(seed * 1_000_003 + i))
                if progress and i % 256 == 0:
                    progress(self.count, budget)
                if self._hit(run, vs):
                    return
            return
        if strategy == "hypothesis":
            from emu.search import hypothesis as hyp

            base, _ = self.run(Default())
            points = base.points * 2 + 8

            def run_one(plan: hyp.Plan) -> bool:
                run, vs = self.run(plan)
                if progress and self.count % 256 == 0:
                    progress(self.count, budget)
                return self._hit(run, vs)

            hyp.search(run_one, points=points, max_schedules=budget, seed=seed, database=database)
            return
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
