"""`replay`: follow a recorded schedule's choices exactly, or say where it stops fitting."""

from __future__ import annotations

from collections.abc import Iterable

from emu.engine.choice import Choice, Options
from emu.engine.scheduler import PointInfo, Scheduler, next_point
from emu.errors import ScheduleError


class Replay(Scheduler):
    def __init__(self, choices: Iterable[tuple[int, Choice]]) -> None:
        self.choices = dict(choices)
        self.points = sorted(self.choices)

    def quiet_until(self, point: int, options: Options) -> int:
        return next_point(self.points, point)

    def choose(self, point: int, options: Options, info: PointInfo | None) -> int:
        choice = self.choices.get(point)
        if choice is None:
            return 0
        try:
            return options.index(choice)
        except ValueError:
            raise ScheduleError(
                f"schedule does not fit this run: at decision {point} it chooses "
                f"{choice.label!r} but only {', '.join(o.label for o in options)} could run "
                "(another image or host?)"
            ) from None
