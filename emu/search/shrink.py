"""Greedy shrinking of a violating schedule: drop choices while the same oracle still fires."""

from __future__ import annotations

from collections.abc import Callable

from emu.engine.choice import Choices
from emu.errors import ScheduleError


def shrink(choices: Choices, fails: Callable[[Choices], bool], budget: int = 2000) -> Choices:
    """The smallest sub-list of `choices` (one removal at a time) for which `fails` holds."""
    best = tuple(choices)
    tries = 0
    progress = True
    while progress and tries < budget:
        progress = False
        for i in range(len(best)):
            cand = best[:i] + best[i + 1 :]
            tries += 1
            try:
                ok = fails(cand)
            except ScheduleError:
                ok = False
            if ok:
                best = cand
                progress = True
                break
    return best
