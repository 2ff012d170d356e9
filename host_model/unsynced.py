"""`unsynced-tsc`: per-vCPU TSC offsets while PVCLOCK_TSC_STABLE_BIT is set (a host bug).

The stable bit (Linux 3.8+) promises that every vCPU's TSC runs in step, so any vCPU's
pvti converts any vCPU's TSC. KVM sets it only while its master clock is in use, which
requires matched TSCs; a host that sets it anyway (a TSC clocksource forced with
`tsc=reliable` on hardware whose sockets' TSCs differ, or vCPU TSCs written by userspace at
different moments that the host fails to notice) gives each vCPU a TSC offset. Each
vCPU's own page is right for its own TSC; a reader that pairs one vCPU's TSC with another
vCPU's page (the vCPU-0 readers, or a per-CPU reader whose task migrated between `getcpu`
and `rdtsc`) is off by the offset, and time can go backwards across vCPUs.
"""

from __future__ import annotations

from collections.abc import Iterator

from host_model.base import HostModel, HostStep, HostView, Param
from host_model.writer import initial_writes, republish, snapshot


class UnsyncedTsc(HostModel):
    name = "unsynced-tsc"
    summary = "per-vCPU TSC offsets while the stable bit is (wrongly) set"
    params = (
        Param("offset", 25_000, "vCPU v's TSC is v*offset cycles ahead of vCPU 0's"),
        Param(
            "updates", 0, "correct seqlock updates of every vCPU's page (rounds)", low=0, high=100
        ),
        Param("stable", 1, "stable bit in every page", low=0, high=1),
    )

    def tsc_offsets(self, vcpus: int) -> tuple[int, ...]:
        return tuple(v * self.offset for v in range(vcpus))

    def setup(self, view: HostView) -> HostStep:
        stable = bool(self.stable)
        self.pvti = [
            snapshot(view.clock, v, view.t, version=2, stable=stable) for v in range(view.vcpus)
        ]
        return initial_writes(self.pvti)

    def steps(self, view: HostView) -> Iterator[HostStep]:
        for _ in range(self.updates):
            for v in range(view.vcpus):
                me = frozenset({v})
                yield HostStep(f"vcpu{v} exits to the host", park=me)
                yield from republish(self.pvti, v, view, stable=bool(self.stable))
                yield HostStep(f"vcpu{v} re-enters the guest", unpark=me)
