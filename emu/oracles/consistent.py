"""`consistent`: a value is the formula applied to one published record current at some
instant t of the read, with the TSC the reading vCPU had at that same instant."""

from __future__ import annotations

from emu.engine.run import Read, Run
from emu.oracles.base import Evidence, Violation

NAME = "consistent"


def _clock_keys(run: Run, read: Read) -> str:
    return ", ".join(sorted(k for k in read.keys if k in run.history)) or "any clock page"


def check(ev: Evidence) -> list[Violation]:
    return [
        Violation(
            NAME,
            f"{r.label} returned {r.value} (t={r.start}..{r.end}), which no published "
            f"record of {_clock_keys(ev.run, r)} gives with the "
            f"vCPU's TSC at any instant of the read (a torn or mis-timed read)",
            (r.label,),
        )
        for r, m in ev.matches()
        if m is None
    ]
