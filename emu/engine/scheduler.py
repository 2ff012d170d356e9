"""The `Scheduler` contract: at each decision point, pick one of the offered options.

A decision point arises whenever more than one agent (a task, or the host) could execute
the next event, and at action points (a guest task migration, a speculative TSC). Option 0
is always the default (keep running the current agent; nothing happens), so a schedule is
just the sparse list of points where a strategy chose something else, and shrinking
towards option 0 shrinks towards fewer preemptions.

The executor's decision maker (emu/engine/decisions.py) is the only caller of a scheduler.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar, NamedTuple

from emu.engine.choice import Options, RunTask
from emu.engine.run import Read, Run

#: A point or time no run reaches (`quiet_until` of a scheduler that never deviates again).
NEVER = 1 << 62


class PointInfo(NamedTuple):
    """What the next event of some options would touch, for strategies that reduce.

    Given to `choose` only when the scheduler's class sets `wants_info = True`. A named
    tuple (immutable, and built at every decision point several times faster than a
    frozen dataclass).
    """

    #: The task that is about to execute a visible operation, and that operation:
    #: (kind, address, size). None at decisions outside a guest operation.
    task: RunTask | None = None
    op: tuple[str, int, int] | None = None
    #: Address ranges [start, end) the host's next step writes; None when the host has no
    #: next step or the step does more than write (parks vCPUs, retunes a TSC).
    host_writes: tuple[tuple[int, int], ...] | None = None
    #: The logical time the next event takes (-1: not told). Given at action points too.
    t: int = -1
    #: What ran before this point, for strategies that analyse the run as it goes
    #: (dynamic partial-order reduction): the run so far (ended reads, host steps taken)
    #: and each task's read in progress (None between reads). Live objects: read only.
    run: Run | None = None
    reads: tuple[Read | None, ...] = ()
    #: Where the shared pages are (page name -> address) and how wide each load site's
    #: load is (site address -> bytes): to turn the run's records into byte ranges.
    pages: Mapping[str, int] = MappingProxyType({})
    widths: Mapping[int, int] = MappingProxyType({})
    #: Takes a snapshot of the run just before this decision (None: none can be taken
    #: here), for `Scheduler.start_from` of a later run (emu/engine/snapshot.py). Call it
    #: only inside `choose`.
    snapshot: Callable[[], object] | None = None

    def host_commutes(self) -> bool:
        """Would the host's next step and the task's pending load touch disjoint bytes?"""
        if self.op is None or self.host_writes is None or self.op[0] != "load":
            return False
        _, lo, size = self.op
        return all(hi <= lo or lo + size <= start for start, hi in self.host_writes)


class Scheduler:
    """Makes the choices of one run (a fresh scheduler per run)."""

    #: Does `choose` want a `PointInfo` (then it gets one at every point it is asked at,
    #: and the executor runs every visible operation in Python unless `quiet_with_info`)?
    #: Otherwise `info` is None.
    wants_info: ClassVar[bool] = False
    #: Does it take snapshots (`PointInfo.snapshot`) and start runs from them
    #: (`start_from`)? Only then does the executor offer them.
    takes_snapshots: ClassVar[bool] = False
    #: With `wants_info`: may the executor still run the points `quiet_until` passes in
    #: its native lane (no `choose` there, so no `PointInfo` either)? Read once per run,
    #: so a scheduler may set it for its run. Without `wants_info`, it always may.
    quiet_with_info: bool = False

    def choose(self, point: int, options: Options, info: PointInfo | None) -> int:
        """The chosen option's position in `options` at decision point `point`."""
        raise NotImplementedError

    def start_from(self) -> object | None:
        """A snapshot (`PointInfo.snapshot`) this run starts from instead of the beginning:
        the executor restores it and asks `choose` from its decision point on, so every
        choice before it must be the one the snapshot's run made. Default: none."""
        return None

    def quiet_until(self, point: int, options: Options) -> int:
        """The first decision point at or after `point` where this scheduler might not take
        option 0, given that every point until then offers `options` (the executor asks
        only while that holds). The executor runs the points before it without calling
        `choose` (in its native lane), so `choose` must not depend on being called there.
        This default is never quiet."""
        return point


def next_point(points: list[int], index: int) -> int:
    """The first of the sorted `points` at or after `index` (NEVER when none is)."""
    at = bisect_left(points, index)
    return points[at] if at < len(points) else NEVER


class Default(Scheduler):
    """Never preempts: each agent runs until it blocks or finishes."""

    def choose(self, point: int, options: Options, info: PointInfo | None) -> int:
        return 0

    def quiet_until(self, point: int, options: Options) -> int:
        return NEVER
