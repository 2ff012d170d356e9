"""The two kinds of error a command can end with.

Bad input (`UsageError` and its subclasses, and host_model's `HostParamError`) is the
user's to fix: the CLI prints it as one line, exit 2. Anything else is a bug of ours; the
fuzz driver wraps it in an `InternalError` carrying the run that triggered it, so the CLI can
save that run as a replay file and ask for a report (exit 70).
"""

from __future__ import annotations

from typing import Any

from host_model.base import HostParamError


class UsageError(ValueError):
    """Bad input: the message says what is wrong and what to do instead."""


class ImageError(UsageError):
    """The file cannot be used as a reader image."""


class ScheduleError(UsageError):
    """A schedule or finding file is malformed or belongs to another scenario."""


def check_range(
    option: str, value: object, low: int, high: int | None, error: type[UsageError] = UsageError
) -> None:
    """Refuse `value` for `option` unless it is an integer in low..high (None: no top)."""
    accepted = f"{low}..{high}" if high is not None else f"{low} or more"
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{option} must be an integer ({accepted}), not {value!r}")
    if value < low or (high is not None and value > high):
        raise error(f"{option} must be {accepted}, not {value}")


#: What the CLI answers with one line and exit 2.
BAD_INPUT: tuple[type[Exception], ...] = (UsageError, HostParamError)


class InternalError(Exception):
    """A bug of ours met during a run.

    `cause` is the original exception; `schedule` (an emu.search.schedule.Schedule) holds
    the scenario, the image hash and the choices the failing run had made when it failed,
    so replaying it reaches the same point. `in_run` says whether the run was in progress
    (False: the run had ended and judging it failed). `where` is the cause's traceback as
    text, kept because a traceback does not survive pickling.
    """

    def __init__(
        self, cause: BaseException, schedule: Any, in_run: bool = True, where: str = ""
    ) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.schedule = schedule
        self.in_run = in_run
        if not where:
            import traceback  # here: every command imports this module, few need it

            where = "".join(traceback.format_exception(cause))
        self.where = where

    def __reduce__(self) -> tuple[Any, ...]:
        # `check` runs scenarios in worker processes: the error crosses back pickled.
        return (type(self), (self.cause, self.schedule, self.in_run, self.where))
