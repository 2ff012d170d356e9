"""A fuzz campaign: run a strategy over a scenario until a violation or the budget, shrink
the violation to a minimal schedule, and save it as a finding."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emu.engine.executor import Executor
from emu.engine.run import Run
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Scheduler
from emu.errors import BAD_INPUT, InternalError
from emu.oracles import Violation, judge
from emu.search import STRATEGIES
from emu.search.replay import Replay
from emu.search.schedule import Finding, Schedule
from emu.search.shrink import shrink
from emu.search.strategy import Result, Strategy

#: Runs a strategy may make when the caller gives no budget (exhaustive: until done).
DEFAULT_BUDGET = {"exhaustive": 10**12}
BUDGET = 10_000


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
    #: What the strategy reports as data (PCT's guarantee, exhaustive's count and bound).
    stats: dict[str, object] = field(default_factory=dict)
    #: (schedules run, seconds) when the first violation of the target oracle was seen,
    #: before shrinking.
    first_hit: tuple[int, float] | None = None

    @property
    def verdict(self) -> str:
        return "violation" if self.finding else "pass"


Progress = Callable[[int, int], None]


class _Recording:
    """`scheduler` with its non-default choices kept as they are made, so a run that raises
    still tells which schedule got it there (the executor records them the same way)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.inner = scheduler
        self.made: list[tuple[int, str]] = []

    def __getattr__(self, name: str) -> object:
        # `quiet_until`, `wants_info` and the rest are the wrapped scheduler's.
        return getattr(self.inner, name)

    def choose(self, index: int, options: tuple[str, ...], *info: object) -> int:
        k = self.inner.choose(index, options, *info)
        if k:
            self.made.append((index, options[k]))
        return k


class Campaign:
    def __init__(self, scenario: Scenario, executor: Executor | None = None) -> None:
        self.scenario = scenario
        self.executor = executor or Executor(scenario)
        self.count = 0
        self.target: str | None = None
        self.best: tuple[Run, list[Violation]] | None = None
        self.first_hit: tuple[int, float] | None = None
        self._start = time.monotonic()

    def run(self, scheduler: Scheduler) -> tuple[Run, list[Violation]]:
        """One run under `scheduler`, judged. An exception that is not bad input is a bug
        of ours: it leaves as an InternalError carrying the choices made so far."""
        recording = _Recording(scheduler)
        run = None
        try:
            run = self.executor.run(recording)
            self.count += 1
            return run, judge(run, self.scenario)
        except (*BAD_INPUT, InternalError):
            raise
        except Exception as e:
            made = run.choices if run is not None else recording.made
            schedule = Schedule(self.scenario, self.executor.image.sha256, tuple(made))
            raise InternalError(e, schedule, in_run=run is None) from e

    def _hit(self, run: Run, violations: list[Violation]) -> bool:
        """Does this run fail the campaign's target oracle (the first one seen)?"""
        if not violations:
            return False
        if self.target is None:
            self.target = violations[0].oracle
        for v in violations:
            if v.oracle == self.target:
                self.best = (run, violations)
                if self.first_hit is None:
                    self.first_hit = (self.count, time.monotonic() - self._start)
                return True
        return False

    def score(self, run: Run, violations: list[Violation]) -> float | None:
        """The size of the run's worst timestamp error in ns, for `hypothesis.target`.

        The largest monotonic regression between two ordered reads (negative when every
        later read is larger: minus the smallest margin), or, when larger, the distance of
        an inconsistent read's value from the nearest value a published record gives at an
        instant of the read. None when the run has no two ordered reads and no error.
        """
        best: int | None = None
        done = [r for r in run.reads if r.returned()]
        for a in done:
            for b in done:
                if a.end < b.start and (best is None or a.value - b.value > best):
                    best = a.value - b.value
        torn = {label for v in violations if v.oracle == "consistent" for label in v.reads}
        for r in run.reads:
            if r.label not in torn:
                continue
            err = None
            for t in range(r.start, r.end + 1):
                tsc = run.clock.tsc(r.vcpu_at(t), t)
                for key in r.keys:
                    snap = run.current(key, t)
                    if snap is not None:
                        d = abs(snap.ns_at(tsc) - r.value)
                        err = d if err is None else min(err, d)
            if err is not None and (best is None or err > best):
                best = err
        return None if best is None else float(best)

    def replay(self, choices: tuple[tuple[int, str], ...]) -> tuple[Run, list[Violation]]:
        return self.run(Replay(choices))

    def fuzz(
        self,
        *,
        strategy: str = "hypothesis",
        seed: int = 0,
        max_schedules: int | None = None,
        database: Path | None = None,
        progress: Progress | None = None,
        depth: int = 3,
        preemptions: int = 2,
    ) -> Outcome:
        """Run `strategy` until a violation or `max_schedules` runs (None: the strategy's
        default, 10,000, or no limit for `exhaustive`), then shrink the violation.

        `depth` is PCT's bug depth d, `preemptions` exhaustive's preemption bound.
        """
        out = Outcome(self.scenario, strategy, seed)
        start = self._start = time.monotonic()
        budget = max_schedules
        if budget is None:
            budget = DEFAULT_BUDGET.get(strategy, BUDGET)
        strat = self.strategy(
            strategy, seed=seed, database=database, depth=depth, preemptions=preemptions
        )
        try:
            self._search(strat, budget, progress)
        except KeyboardInterrupt:
            out.interrupted = True
            out.notes.append("interrupted: the finding (if any) is the smallest seen so far")
        out.notes[:0] = strat.notes
        out.stats = dict(strat.stats)
        out.first_hit = self.first_hit
        out.schedules = self.count
        if self.best is not None:
            choices = tuple(self.best[0].choices)
            if not out.interrupted:
                # Hypothesis shrinks its plans; dropping choices one at a time can still
                # remove a preemption its byte-level shrinker could not.
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

    def strategy(
        self,
        name: str,
        *,
        seed: int = 0,
        database: Path | None = None,
        depth: int = 3,
        preemptions: int = 2,
    ) -> Strategy:
        """The strategy called `name`, set up for this campaign's scenario."""
        if name == "hypothesis":
            from emu.search.hypothesis import HypothesisStrategy

            return HypothesisStrategy(seed, database)
        if name == "random":
            from emu.search.random import RandomStrategy

            return RandomStrategy(seed)
        if name == "pct":
            from emu.search.pct import PctStrategy

            return PctStrategy(seed, depth, agents=self.scenario.vcpus + 1)
        if name == "exhaustive":
            from emu.search.exhaustive import ExhaustiveStrategy

            return ExhaustiveStrategy(preemptions)
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")

    def _search(self, strat: Strategy, budget: int, progress: Progress | None) -> None:
        score = strat.wants_score

        def run_one(scheduler: Scheduler) -> Result:
            run, vs = self.run(scheduler)
            if progress and self.count % 256 == 0:
                progress(self.count, budget)
            hit = self._hit(run, vs)
            return Result(hit, run.points, self.score(run, vs) if score else None)

        strat.explore(run_one, budget)
