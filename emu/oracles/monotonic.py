"""`monotonic`: a read that starts after another finished (in the global schedule) never
returns less, across every vCPU and task."""

from __future__ import annotations

from emu.oracles.base import Evidence, Violation

NAME = "monotonic"


def check(ev: Evidence) -> list[Violation]:
    done = [r for r in ev.run.reads if r.returned()]
    out = []
    for a in done:
        for b in done:
            if a.end < b.start and b.value < a.value:
                out.append(
                    Violation(
                        NAME,
                        f"{b.label} returned {b.value} (t={b.start}..{b.end}), "
                        f"{a.value - b.value} ns less than {a.label}'s {a.value}, which "
                        f"finished earlier (t={a.end})",
                        (a.label, b.label),
                    )
                )
    return out
