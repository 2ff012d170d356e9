"""A fuzz campaign: run a strategy over a scenario until a violation or the budget, shrink
the violation to a minimal schedule, and save it as a finding."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emu.engine.choice import Choices
from emu.engine.executor import Executor
from emu.engine.run import Run
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Scheduler
from emu.errors import BAD_INPUT, InternalError
from emu.oracles import Violation, judge
from emu.search.registry import DEFAULT_STRATEGY, STRATEGIES, make_strategy
from emu.search.replay import Replay
from emu.search.schedule import Finding, Schedule
from emu.search.shrink import shrink
from emu.search.strategy import Result, Settings, Strategy

__all__ = ["STRATEGIES", "Fuzzer", "Outcome"]


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


class Fuzzer:
    """Searches one scenario with one strategy until a violation (then shrinks it) or the
    budget ends: the engine of `vdsofuzz fuzz` and of each campaign shard."""

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
        self.executor.last_run = None
        run = None
        try:
            run = self.executor.run(scheduler)
            self.count += 1
            return run, judge(run, self.scenario)
        except BAD_INPUT:
            raise
        except InternalError:
            raise
        except Exception as e:
            partial = run or self.executor.last_run
            made = partial.choices if partial is not None else []
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
        done = [
            (r.start, r.end, r.value) for r in run.reads if r.value is not None and r.returned()
        ]
        for _, a_end, a_value in done:
            for b_start, _, b_value in done:
                if a_end < b_start and (best is None or a_value - b_value > best):
                    best = a_value - b_value
        torn = {label for v in violations if v.oracle == "consistent" for label in v.reads}
        for r in run.reads:
            if r.label not in torn or r.value is None:
                continue
            err: int | None = None
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

    def replay(self, choices: Choices) -> tuple[Run, list[Violation]]:
        return self.run(Replay(choices))

    def fuzz(
        self,
        *,
        strategy: str = DEFAULT_STRATEGY,
        seed: int = 0,
        max_schedules: int | None = None,
        database: Path | None = None,
        progress: Progress | None = None,
        depth: int = 3,
        preemptions: int | None = 2,
        checkpoint: Path | None = None,
    ) -> Outcome:
        """Run `strategy` until a violation or `max_schedules` runs (None: the strategy's
        default: `Strategy.default_budget`), then shrink the violation.

        `depth` is PCT's bug depth d, `preemptions` exhaustive's and dpor's preemption bound
        (None: none), `checkpoint` dpor's frontier file.
        """
        out = Outcome(self.scenario, strategy, seed)
        start = self._start = time.monotonic()
        strat = self.strategy(
            strategy,
            seed=seed,
            database=database,
            depth=depth,
            preemptions=preemptions,
            checkpoint=checkpoint,
        )
        budget = strat.default_budget if max_schedules is None else max_schedules
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
            out.finding = self._finding(tuple(self.best[0].choices), out)
        out.elapsed = time.monotonic() - start
        return out

    def _finding(self, choices: Choices, out: Outcome) -> Finding | None:
        """The finding of the best violating run's `choices`, shrunk unless interrupted."""
        if not out.interrupted:
            # Hypothesis shrinks its plans; dropping choices one at a time can still
            # remove a preemption its byte-level shrinker could not.
            choices = self._shrink(choices)
        run, violations = self.replay(choices)
        v = next((x for x in violations if x.oracle == self.target), None)
        if v is None:
            return None
        return Finding(
            Schedule(
                self.scenario,
                self.executor.image.sha256,
                tuple(run.choices),
                out.seed,
                out.strategy,
            ),
            v.oracle,
            v.message,
            v.reads,
            {"schedules": out.schedules, "decision_points": run.points, "steps": run.steps},
        )

    def finding_of(self, choices: Choices, oracle: str, strategy: str, seed: int) -> Finding | None:
        """The shrunk finding of a run (its `choices`) that violated `oracle`: campaign
        shards keep searching after a violation and call this once per violation."""
        self.target = oracle
        return self._finding(choices, Outcome(self.scenario, strategy, seed, self.count))

    def _shrink(self, choices: Choices) -> Choices:
        def fails(c: Choices) -> bool:
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
        preemptions: int | None = 2,
        checkpoint: Path | None = None,
    ) -> Strategy:
        """The strategy called `name` (emu/search/registry.py), set up for this campaign's
        scenario."""
        sc = self.scenario
        settings = Settings(
            seed, database, depth, preemptions, sc.vcpus + 1, checkpoint, sc.independent_attempts
        )
        return make_strategy(name, settings)

    def _search(self, strat: Strategy, budget: int, progress: Progress | None) -> None:
        score = strat.wants_score

        def run_one(scheduler: Scheduler) -> Result:
            run, vs = self.run(scheduler)
            if progress and self.count % 256 == 0:
                progress(self.count, budget)
            hit = self._hit(run, vs)
            return Result(hit, run.points, self.score(run, vs) if score else None)

        strat.explore(run_one, budget)
