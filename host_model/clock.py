"""Logical time: step number -> host nanoseconds, and each vCPU's TSC as a function of it.

Time in the model is the count of executed events (guest visible operations and host
steps), never the wall clock, so a schedule replays bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS_PER_S = 1_000_000_000
#: Host nanoseconds that pass per logical step.
NS_PER_STEP = 100
DEFAULT_TSC_HZ = 2_500_000_000
#: Guest uptime at step 0; large enough that every clock value is far from zero.
BOOT_NS = 1_000 * NS_PER_S


@dataclass(frozen=True)
class TscSegment:
    """From logical step `start` on, the TSC counts at `hz` starting from `start_tsc`."""

    start: int
    start_tsc: int
    hz: int

    def at(self, t: int) -> int:
        return self.start_tsc + (t - self.start) * self.hz * NS_PER_STEP // NS_PER_S


def hz_of(mul: int, shift: int) -> int:
    """The TSC frequency that a pvti's (mul, shift) converts to nanoseconds.

    One cycle is mul / 2^32 * 2^shift ns, so there are 1e9 * 2^32 / (mul * 2^shift) per second.
    """
    if shift >= 0:
        return (NS_PER_S << 32) // (mul << shift)
    return (NS_PER_S << 32 << -shift) // mul


@dataclass(frozen=True)
class Seed:
    """A real pvti to start the model's clock from (a dump of a KVM guest's pvclock page)."""

    tsc_hz: int
    boot_ns: int
    tsc_base: int


@dataclass
class Clock:
    """The host's true time and the per-vCPU TSCs, piecewise linear in logical steps."""

    vcpus: int
    tsc_hz: int = DEFAULT_TSC_HZ
    boot_ns: int = BOOT_NS
    #: Per-vCPU TSC offsets in cycles (non-zero only for unsynchronised-TSC hosts).
    offsets: tuple[int, ...] = ()
    #: The TSC at step 0 (before offsets); default: `boot_ns` worth of cycles.
    tsc_base: int | None = None
    segments: list[list[TscSegment]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.segments:
            base = self.tsc_base
            if base is None:
                base = self.boot_ns * self.tsc_hz // NS_PER_S
            offs = self.offsets or (0,) * self.vcpus
            self.segments = [
                [TscSegment(0, base + offs[v], self.tsc_hz)] for v in range(self.vcpus)
            ]

    def ns(self, t: int) -> int:
        """The model's true guest time (CLOCK_MONOTONIC, ns) at step `t`."""
        return self.boot_ns + t * NS_PER_STEP

    def segment(self, vcpu: int, t: int) -> TscSegment:
        segs = self.segments[vcpu]
        for seg in reversed(segs):
            if seg.start <= t:
                return seg
        return segs[0]

    def tsc(self, vcpu: int, t: int) -> int:
        return self.segment(vcpu, t).at(t) & ((1 << 64) - 1)

    def hz(self, vcpu: int, t: int) -> int:
        return self.segment(vcpu, t).hz

    def retune(self, vcpu: int, t: int, *, hz: int | None = None, jump: int = 0) -> None:
        """From step `t` on, vCPU `vcpu`'s TSC runs at `hz` and is displaced by `jump` cycles."""
        now = self.segment(vcpu, t)
        new = TscSegment(t, now.at(t) + jump, hz if hz is not None else now.hz)
        self.segments[vcpu] = [s for s in self.segments[vcpu] if s.start < t] + [new]
