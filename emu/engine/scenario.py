"""A scenario: image + host model + parameters + machine options + oracle set.

It is the part of a schedule file that says *what* ran; the choices say *how*.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from emu.errors import ScheduleError

ORACLES = ("monotonic", "consistent", "accurate", "contract", "terminates", "no-fault")


@dataclass(frozen=True)
class Scenario:
    image: str
    host: str = "kvm"
    host_params: dict[str, Any] = field(default_factory=dict)
    vcpus: int = 2
    #: Reads each task makes, one after another.
    reads: int = 2
    oracles: tuple[str, ...] = ORACLES
    #: The accurate oracle's bound: |value - true time| allowed, in ns.
    accuracy_ns: int = 1_000_000
    #: Guest task migration between vCPUs at any visible operation.
    task_migration: bool = False
    #: `rdtsc` with no fence since the last shared-page load may return an earlier TSC.
    speculative_tsc: bool = False
    #: Real vDSOs: the CPU whose `.altinstructions` are applied ("" = this machine's).
    cpu: str = ""
    #: Real vDSOs: the clock id `__vdso_clock_gettime` is called with.
    clock: str = "CLOCK_MONOTONIC"
    #: Real vDSOs: the guest kernel's timekeeping updates of `vdso_data` (its own seqlock),
    #: taken by the host agent before the host model's own steps.
    timekeeping: int = 0

    def __post_init__(self) -> None:
        if self.vcpus < 1 or self.vcpus > 64:
            raise ScheduleError(f"--vcpus must be 1..64, not {self.vcpus}")
        if self.timekeeping < 0:
            raise ScheduleError(f"--timekeeping must be 0 or more, not {self.timekeeping}")
        if self.reads < 1:
            raise ScheduleError(f"--reads must be at least 1, not {self.reads}")
        bad = [o for o in self.oracles if o not in ORACLES]
        if bad:
            raise ScheduleError(f"unknown oracle {bad[0]!r}; choose from {', '.join(ORACLES)}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["oracles"] = list(self.oracles)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scenario:
        try:
            d = dict(d)
            d["oracles"] = tuple(d.get("oracles", ORACLES))
            return cls(**d)
        except TypeError as e:
            raise ScheduleError(f"malformed scenario in schedule file: {e}") from None
