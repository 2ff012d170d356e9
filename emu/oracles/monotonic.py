"""`monotonic`: a read that starts after another finished (in the global schedule) never
returns less, across every vCPU and task."""

from __future__ import annotations

from emu.oracles.base import Evidence, Violation

NAME = "monotonic"


def check(ev: Evidence) -> list[Violation]:
    # A returned read always has a value (the reader's or the syscall's).
    done = [(r, r.value) for r in ev.run.reads if r.returned() and r.value is not None]
    out = []
    for a, av in done:
        for b, bv in done:
            if a.end < b.start and bv < av:
                out.append(
                    Violation(
                        NAME,
                        f"{b.label} returned {bv} (t={b.start}..{b.end}), "
                        f"{av - bv} ns less than {a.label}'s {av}, which "
                        f"finished earlier (t={a.end})",
                        (a.label, b.label),
                    )
                )
    return out
