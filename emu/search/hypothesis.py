"""`hypothesis`: Hypothesis generates preemption plans, shrinks failures, keeps a database.

A plan is a short list of (decision point, option) pairs; every other decision takes the
default. Hypothesis shrinks plans towards fewer, earlier preemptions, which is the minimal
interleaving a human wants to read. Each run reports the size of its worst timestamp error
to `hypothesis.target`, so the generation phase climbs towards larger regressions (and,
for correct readers, towards the smallest margin between two ordered reads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, given, settings, target
from hypothesis import seed as hseed
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from emu.engine.choice import Options
from emu.engine.scheduler import Default, PointInfo, Scheduler, next_point
from emu.search.strategy import RunOne, Settings, Strategy

#: The label of the `target()` observation.
TARGET = "timestamp error (ns)"


class Plan(Scheduler):
    """Scheduler for one plan: at planned points take option k (mod the options offered)."""

    def __init__(self, plan: list[tuple[int, int]]) -> None:
        self.plan = dict(plan)
        self.points = sorted(p for p, k in self.plan.items() if k)

    def quiet_until(self, point: int, options: Options) -> int:
        return next_point(self.points, point)

    def choose(self, point: int, options: Options, info: PointInfo | None) -> int:
        k = self.plan.get(point, 0)
        return k % len(options) if k else 0


#: Preemptions a plan may hold.
PLAN_MAX = 12


def decode(raw: bytes, points: int) -> list[tuple[int, int]]:
    """Plan bytes -> [(decision point, option 1..8)], two bytes a preemption.

    A plan is drawn as plain bytes because Hypothesis draws and shrinks one byte string at
    a fraction of the cost of a list of integer pairs (about 0.3 ms against 0.8 ms per
    example here); shrinking a byte towards 0 moves its preemption earlier.
    """
    return [(raw[i] * (points + 1) >> 8, raw[i + 1] % 8 + 1) for i in range(0, len(raw) - 1, 2)]


class _Stop(Exception):
    """Raised by a test case to make Hypothesis treat the run as failing."""


def search(
    run_one: Callable[[Plan], bool | tuple[bool, float | None]],
    *,
    points: int,
    max_schedules: int,
    seed: int,
    database: Path | None,
) -> None:
    """Call `run_one` on generated plans until one fails (and then shrink it).

    `run_one` returns True on a failing run, or (failed, score) to also steer generation
    with `hypothesis.target(score)`. It records what it needs; Hypothesis' final replay of
    the minimal plan is the last call that fails.
    """
    plans = st.binary(max_size=2 * PLAN_MAX).map(partial(decode, points=max(points, 1)))

    @hseed(seed)
    @settings(
        max_examples=max_schedules,
        database=DirectoryBasedExampleDatabase(str(database)) if database else None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
    )
    @given(plans)
    def test(plan: list[tuple[int, int]]) -> None:
        out = run_one(Plan(plan))
        failed, score = out if isinstance(out, tuple) else (out, None)
        if score is not None:
            target(float(score), label=TARGET)
        if failed:
            raise _Stop

    with contextlib.suppress(_Stop):
        test()


class HypothesisStrategy(Strategy):
    name = "hypothesis"
    wants_score = True

    def __init__(self, seed: int = 0, database: Path | None = None) -> None:
        super().__init__()
        self.seed = seed
        self.database = database

    @classmethod
    def from_settings(cls, settings: Settings) -> HypothesisStrategy:
        return cls(settings.seed, settings.database)

    def explore(self, run_one: RunOne, budget: int) -> None:
        base = run_one(Default())
        if base.hit or budget <= 1:
            return

        def one(plan: Plan) -> tuple[bool, float | None]:
            res = run_one(plan)
            return res.hit, res.score

        search(
            one,
            points=base.points * 2 + 8,
            max_schedules=budget - 1,
            seed=self.seed,
            database=self.database,
        )
