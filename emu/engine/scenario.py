"""A scenario: image + host model + parameters + machine options + oracle set.

It is the part of a schedule file that says *what* ran; the choices say *how*.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from emu.errors import ScheduleError, check_range
from host_model.registry import canonical_host, make_host

ORACLES = (
    "monotonic",
    "consistent",
    "accurate",
    "contract",
    "terminates",
    "no-fault",
    "writer",
)
#: The machine gives every vCPU its own stack and TSC; beyond this it is only slower.
MAX_VCPUS = 64
#: Reads per task; the schedule space grows with every read, so more than this is a typo.
MAX_READS = 1000
#: The clocks a real vDSO's `__vdso_clock_gettime` is called with: those it answers from
#: the TSC and the clock pages in every vdso_data layout (the others fall back to the
#: syscall or read no TSC, so no interleaving could matter).
#: Instructions a task may run without a visible operation before its read is a hang.
MAX_INSNS = 1_000_000
CLOCKS = ("CLOCK_MONOTONIC", "CLOCK_MONOTONIC_RAW", "CLOCK_REALTIME")


def clock_name(clock: str) -> str | None:
    """'CLOCK_MONOTONIC', 'monotonic', 'monotonic_raw' -> the uapi name, None if unknown."""
    if not isinstance(clock, str):
        return None
    name = clock.upper()
    name = name if name.startswith("CLOCK_") else "CLOCK_" + name
    return name if name in CLOCKS else None


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
    #: The hang limit: instructions without a visible operation (`--max-insns`); kept in
    #: the schedule file, so a replay stops where the finding's run stopped.
    max_insns: int = MAX_INSNS
    #: A compiled host writer (bundled name or path) that stores the host's pvti updates
    #: instead of the model's own store protocol ("" = the model's).
    writer: str = ""

    def __post_init__(self) -> None:
        """Refuse values that make the scenario meaningless; every path that builds one (the
        CLI, a catalog entry, a schedule file) comes through here."""
        check_range("--vcpus", self.vcpus, 1, MAX_VCPUS, ScheduleError)
        check_range("--reads", self.reads, 1, MAX_READS, ScheduleError)
        check_range("--accuracy-ns", self.accuracy_ns, 1, None, ScheduleError)
        check_range("--timekeeping", self.timekeeping, 0, None, ScheduleError)
        check_range("--max-insns", self.max_insns, 1, None, ScheduleError)
        if clock_name(self.clock) is None:
            raise ScheduleError(
                f"--clock {self.clock!r} is not a clock id; use one of {', '.join(CLOCKS)}"
            )
        bad = [o for o in self.oracles if o not in ORACLES]
        if bad:
            raise ScheduleError(f"unknown oracle {bad[0]!r}; choose from {', '.join(ORACLES)}")
        # A host file by its absolute path: a worker process or a later replay imports it
        # again from the scenario's plain string.
        object.__setattr__(self, "host", canonical_host(self.host))
        # The host and its parameters: a HostParamError names the host, parameter and range.
        host = make_host(self.host, self.host_params)
        if self.writer and "pvclock" not in host.pages:
            raise ScheduleError(
                f"--writer stores pvti records; host {self.host!r} writes no pvclock page"
            )

    @property
    def independent_attempts(self) -> bool:
        """Does each attempt of a reader start afresh from what it loads? Not with
        `speculative_tsc`: a retry's `rdtsc` may return the TSC of the attempt before."""
        return not self.speculative_tsc

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["oracles"] = list(self.oracles)
        if not self.writer:
            del d["writer"]  # files without a writer stay as they were
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scenario:
        try:
            d = dict(d)
            d["oracles"] = tuple(d.get("oracles", ORACLES))
            return cls(**d)
        except TypeError as e:
            raise ScheduleError(f"malformed scenario in schedule file: {e}") from None
