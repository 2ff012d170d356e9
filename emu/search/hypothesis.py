"""`hypothesis`: Hypothesis generates preemption plans, shrinks failures, keeps a database.

A plan is a short list of (decision point, option) pairs; every other decision takes the
default. Hypothesis shrinks plans towards fewer, earlier preemptions, which is the minimal
interleaving a human wants to read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase


class Plan:
    """Scheduler for one plan: at planned points take option k (mod the options offered)."""

    def __init__(self, plan: list[tuple[int, int]]) -> None:
        self.plan = dict(plan)

    def choose(self, index: int, options: tuple[str, ...]) -> int:
        k = self.plan.get(index, 0)
        return k % len(options) if k else 0


class _Stop(Exception):
    """Raised by a test case to make Hypothesis treat the run as failing."""


def search(
    run_one: Callable[[Plan], bool],
    *,
    points: int,
    max_schedules: int,
    seed: int,
    database: Path | None,
) -> None:
    """Call `run_one` on generated plans until one returns True (and then shrink it).

    `run_one` records what it needs; Hypothesis' final replay of the minimal plan is the
    last call that returns True.
    """
    plans = st.lists(st.tuples(st.integers(0, max(points, 1)), st.integers(1, 8)), max_size=12)

    @hseed(seed)
    @settings(
        max_examples=max_schedules,
        database=DirectoryBasedExampleDatabase(str(database)) if database else None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.reuse, Phase.generate, Phase.shrink),
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
    )
    @given(plans)
    def test(plan: list[tuple[int, int]]) -> None:
        if run_one(Plan(plan)):
            raise _Stop

    with contextlib.suppress(_Stop):
        test()
