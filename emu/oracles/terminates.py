"""`terminates`: every read finishes within its instruction budget once the host is quiet."""

from __future__ import annotations

from emu.engine.run import HANG
from emu.oracles.base import Evidence, Violation

NAME = "terminates"


def check(ev: Evidence) -> list[Violation]:
    return [
        Violation(NAME, f"{r.label} did not finish: {r.detail}", (r.label,))
        for r in ev.run.reads
        if r.outcome == HANG
    ]
