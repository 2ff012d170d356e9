"""`no-fault`: no read makes the guest fault."""

from __future__ import annotations

from emu.engine.run import FAULT
from emu.oracles.base import Evidence, Violation

NAME = "no-fault"


def check(ev: Evidence) -> list[Violation]:
    return [
        Violation(NAME, f"{r.label} faulted: {r.detail}", (r.label,))
        for r in ev.run.reads
        if r.outcome == FAULT
    ]
