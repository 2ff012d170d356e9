"""The `Scheduler` interface: at each decision point, pick one of the offered options.

A decision point arises whenever more than one agent (a task, or the host) could execute
the next event. Option 0 is always the default — keep running the current agent — so a
schedule is just the sparse list of points where a strategy chose something else, and
shrinking towards option 0 shrinks towards fewer preemptions.
"""

from __future__ import annotations

from typing import Protocol


class Scheduler(Protocol):
    def choose(self, index: int, options: tuple[str, ...]) -> int:
        """The chosen option's position in `options` for decision point `index`."""
        ...


class Default:
    """Never preempts: each agent runs until it blocks or finishes."""

    def choose(self, index: int, options: tuple[str, ...]) -> int:
        return 0
