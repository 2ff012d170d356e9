"""`contract`: a value is returned only when the record it came from allowed it (the stable
bit, or a valid Hyper-V sequence); otherwise U64_MAX or the syscall fallback."""

from __future__ import annotations

from emu.oracles.base import Evidence, Violation

NAME = "contract"


def check(ev: Evidence) -> list[Violation]:
    return [
        Violation(
            NAME,
            f"{r.label} returned {r.value} from a record without the stable bit "
            f"(t={m[0]}); it should have returned U64_MAX or fallen back",
            (r.label,),
        )
        for r, m in ev.matches()
        if m is not None and not m[1].stable
    ]
