"""The `Scheduler` interface: at each decision point, pick one of the offered options.

A decision point arises whenever more than one agent (a task, or the host) could execute
the next event. Option 0 is always the default — keep running the current agent — so a
schedule is just the sparse list of points where a strategy chose something else, and
shrinking towards option 0 shrinks towards fewer preemptions.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PointInfo:
    """What the next event of some options would touch, for strategies that reduce.

    A scheduler whose class sets `wants_info = True` is called as
    `choose(index, options, info)`.
    """

    #: The task that is about to execute a visible operation (its label), and that
    #: operation: (kind, address, size). None at decisions outside a guest operation.
    task: str | None = None
    op: tuple[str, int, int] | None = None
    #: Address ranges [start, end) the host's next step writes; None when the host has no
    #: next step or the step does more than write (parks vCPUs, retunes a TSC).
    host_writes: tuple[tuple[int, int], ...] | None = None

    def host_commutes(self) -> bool:
        """Would the host's next step and the task's pending load touch disjoint bytes?"""
        if self.op is None or self.host_writes is None or self.op[0] != "load":
            return False
        _, lo, size = self.op
        return all(hi <= lo or lo + size <= start for start, hi in self.host_writes)


class Scheduler(Protocol):
    """A scheduler may also define `quiet_until(index, options) -> int`: the first decision
    point at or after `index` where it might not take option 0, given that every point until
    then offers `options` (the executor asks only while that holds). The executor then runs
    the points before it without calling `choose` (in its native lane), so `choose` must
    not depend on being called at those points."""

    def choose(self, index: int, options: tuple[str, ...]) -> int:
        """The chosen option's position in `options` for decision point `index`."""
        ...


#: `quiet_until` of a scheduler that never deviates again.
NEVER = 1 << 62


def next_point(points: list[int], index: int) -> int:
    """The first of the sorted `points` at or after `index` (NEVER when none is)."""
    at = bisect_left(points, index)
    return points[at] if at < len(points) else NEVER


class Default:
    """Never preempts: each agent runs until it blocks or finishes."""

    def choose(self, index: int, options: tuple[str, ...]) -> int:
        return 0

    def quiet_until(self, index: int, options: tuple[str, ...]) -> int:
        return NEVER
