"""`accurate`: a returned value lies within the scenario's bound of the model's true time
at some instant of the read."""

from __future__ import annotations

from emu.oracles.base import Evidence, Violation

NAME = "accurate"


def check(ev: Evidence) -> list[Violation]:
    run, bound = ev.run, ev.scenario.accuracy_ns
    out = []
    for r in run.reads:
        value = r.value
        if not r.returned() or value is None:
            continue
        lo = run.clock.ns(r.start) - bound
        hi = run.clock.ns(r.end) + bound
        if not lo <= value <= hi:
            err = value - run.clock.ns(r.end if value > hi else r.start)
            out.append(
                Violation(
                    NAME,
                    f"{r.label} returned {value}, {err:+d} ns from the true time "
                    f"(bound ±{bound} ns)",
                    (r.label,),
                )
            )
    return out
