"""Errors that mean the user's input is wrong; the CLI prints them as one line, exit 2."""


class UsageError(ValueError):
    """Bad input: the message says what is wrong and what to do instead."""


class ImageError(UsageError):
    """The file cannot be used as a reader image."""


class ScheduleError(UsageError):
    """A schedule or finding file is malformed or belongs to another scenario."""
