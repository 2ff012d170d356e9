"""`replay`: follow a recorded schedule's choices exactly, or say where it stops fitting."""

from __future__ import annotations

from emu.engine.scheduler import next_point
from emu.errors import ScheduleError


class Replay:
    def __init__(self, choices: tuple[tuple[int, str], ...] | list[tuple[int, str]]) -> None:
        self.choices = dict(choices)
        self.points = sorted(self.choices)

    def quiet_until(self, index: int, options: tuple[str, ...]) -> int:
        return next_point(self.points, index)

    def choose(self, index: int, options: tuple[str, ...]) -> int:
        label = self.choices.get(index)
        if label is None:
            return 0
        try:
            return options.index(label)
        except ValueError:
            raise ScheduleError(
                f"schedule does not fit this run: at decision {index} it chooses {label!r} "
                f"but only {', '.join(options)} could run (another image or host?)"
            ) from None
